"""Analyze and Review dock widgets. Thin: the logic lives in volbmd.pipeline and volbmd.review."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from volbmd.segment.base import BACKENDS, REGISTRY

if TYPE_CHECKING:
    import napari

__all__ = ["AnalyzeWidget", "ReviewWidget", "volume_from_layer"]

COLUMNS = ("level", "HU", "BMD mg/cm³", "category", "decision", "flags")


def volume_from_layer(layer):
    """An image layer shown by volbmd (canonical frame) back to a Volume."""
    from volbmd.volume import Volume

    meta = dict(layer.metadata or {})
    return Volume(
        array=np.asarray(layer.data),
        spacing_mm=tuple(layer.scale),
        origin_lps_mm=tuple(layer.translate)[::-1],
        metadata=meta,
        source=layer.name,
    )


def _fill_table(table: QTableWidget, rows: list[dict]) -> None:
    table.setRowCount(len(rows))
    for r, row in enumerate(rows):
        values = (
            row["level"],
            row.get("hu"),
            row.get("bmd"),
            row.get("category"),
            row.get("decision", ""),
            ", ".join(row.get("flags", [])),
        )
        for c, value in enumerate(values):
            text = "–" if value is None else (f"{value:.1f}" if isinstance(value, float) else str(value))
            if c == 2 and value is not None and row.get("bmd_sd") is not None:
                text += f" ± {row['bmd_sd']:.1f}"
            if c == 2 and row.get("bmd_dl") is not None:  # the network's BMD beside the calibrated one
                text += f" (DL {row['bmd_dl']:.1f} ± {row['bmd_dl_sd']:.1f})"
            table.setItem(r, c, QTableWidgetItem(text))
    table.resizeColumnsToContents()


def _table() -> QTableWidget:
    table = QTableWidget(0, len(COLUMNS))
    table.setHorizontalHeaderLabels(COLUMNS)
    table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
    table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
    return table


def _keep_triton_out() -> None:
    """napari draws with OpenGL; under Mesa's software renderer (llvmpipe: Xvfb, virtual machines,
    remote desktops) Mesa's LLVM is loaded, and loading Triton's own LLVM after it crashes the
    process. MONAI's network modules import torchvision, which imports torch._dynamo, which imports
    Triton only to offer torch.compile — never used by volbmd. Marking Triton absent in the napari
    process (before the first MONAI import) keeps the Analyze widget's networks from crashing it."""
    if "triton" not in sys.modules:
        sys.modules["triton"] = None  # type: ignore[assignment]  # `import triton` now raises ImportError


class AnalyzeWidget(QWidget):
    """Run the pipeline on the selected image layer without freezing the viewer."""

    #: emitted from the worker thread after each pipeline stage; Qt queues it to the GUI thread
    stage_done = Signal(str)

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__()
        _keep_triton_out()
        self.stage_done.connect(self._advance)
        self.viewer = napari_viewer
        self.backend = QComboBox()
        self.backend.addItems(
            [f"{name} (selected labels layer)" if REGISTRY[name].needs == "masks" else name for name in BACKENDS]
        )
        self.model = QLineEdit()
        self.model.setPlaceholderText("model folder / checkpoint (nnunet, monai)")
        self.calibration = QLineEdit()
        self.calibration.setPlaceholderText("calibration.json (empty: internal)")
        self.bmd_model = QLineEdit()
        self.bmd_model.setPlaceholderText("BMD model folder from 'volbmd train bmd' (empty: none)")
        self.run_button = QPushButton("Analyze")
        self.progress = QProgressBar()
        from volbmd.pipeline import STAGES

        self._stages = [st for st in STAGES if st != "report"]
        self.progress.setRange(0, len(self._stages))
        self.status = QLabel("")
        self.table = _table()
        self.report = None
        layout = QVBoxLayout(self)
        for w in (
            QLabel("Segmenter"),
            self.backend,
            self.model,
            QLabel("Calibration"),
            self.calibration,
            QLabel("Deep-learning BMD (optional)"),
            self.bmd_model,
            self.run_button,
            self.progress,
            self.status,
            self.table,
        ):
            layout.addWidget(w)
        self.run_button.clicked.connect(lambda: self.start())

    def _inputs(self):
        from napari.layers import Image, Labels

        images = [ly for ly in self.viewer.layers.selection if isinstance(ly, Image)] or [
            ly for ly in self.viewer.layers if isinstance(ly, Image)
        ]
        if not images:
            raise ValueError("open a scan first (an image layer)")
        volume = volume_from_layer(images[0])
        segmenter = None
        backend = self.backend.currentText().split()[0]
        if backend == "masks":
            from volbmd.demo import GivenLabels
            from volbmd.volume import LabelMap

            labels = [ly for ly in self.viewer.layers if isinstance(ly, Labels)]
            if not labels:
                raise ValueError("masks: add a labels layer with VerSe ids")
            levels = (labels[0].metadata or {}).get("levels") or {}
            segmenter = GivenLabels(LabelMap.on_grid_of(volume, np.asarray(labels[0].data), levels))
        kwargs = {
            "segmenter": segmenter,
            "calibration": self.calibration.text() or None,
            "bmd_model": self.bmd_model.text() or None,
        }
        if segmenter is None:
            kwargs["config"] = None
            from volbmd.config import load_config
            from volbmd.segment.base import make_segmenter

            cfg = load_config(overrides={"segmentation": {"backend": backend}})
            kwargs["segmenter"] = make_segmenter(
                backend,
                model=self.model.text() or None,
                label_scheme=cfg.segmentation.label_scheme,
                classical=cfg.segmentation.classical,
            )
        return volume, kwargs

    def _analyze(self, volume, kwargs, emit=None):
        import volbmd

        return volbmd.analyze(volume, progress=emit, **kwargs)

    def start(self, synchronous: bool = False):
        """Run in a napari thread_worker (or in this thread when ``synchronous``, for tests)."""
        try:
            volume, kwargs = self._inputs()
        except Exception as exc:
            self.status.setText(f"error: {exc}")
            return None
        self.progress.setValue(0)
        self.status.setText("running…")
        if synchronous:
            report = self._analyze(volume, kwargs)
            self._done(report)
            return report
        from napari.qt.threading import thread_worker

        @thread_worker
        def work():
            return self._analyze(volume, kwargs, emit=lambda stage, seconds: self.stage_done.emit(stage))

        worker = work()
        worker.returned.connect(self._done)
        worker.errored.connect(lambda exc: self.status.setText(f"error: {exc}"))
        worker.start()
        return worker

    def _advance(self, stage: str) -> None:
        if stage in self._stages:
            self.progress.setValue(self._stages.index(stage) + 1)
            following = self._stages.index(stage) + 1
            self.status.setText(f"running: {self._stages[following]}…" if following < len(self._stages) else "finishing…")

    def _done(self, report) -> None:
        from volbmd.napari._layers import labels_layer

        self.report = report
        art = report.artifacts
        data, kw, _ = labels_layer(art.labels, name="volbmd labels")
        self.viewer.add_labels(data, **kw)
        from volbmd.geometry import canonicalize

        canon, _ = canonicalize(art.volume, copy=False)
        _, rois = art.result.mask_volumes(canon.shape)
        self.viewer.add_labels(rois, name="volbmd ROIs", scale=kw["scale"], translate=kw["translate"], opacity=0.6)
        rows = [
            {
                "level": v.level,
                "hu": v.trabecular_hu_mean,
                "bmd": v.bmd_mg_cm3,
                "bmd_sd": v.bmd_sd_mg_cm3,
                "bmd_dl": v.bmd_dl_mg_cm3,
                "bmd_dl_sd": v.bmd_dl_sd_mg_cm3,
                "category": None,
                "decision": "",
                "flags": v.flags,
            }
            for v in report.vertebrae
        ]
        _fill_table(self.table, rows)
        self.progress.setValue(len(self._stages))
        summ = report.summary
        self.status.setText(
            f"{summ.acr_category or 'not classified'}"
            + (f": {summ.bmd_mg_cm3_mean:.1f} mg/cm³" if summ.bmd_mg_cm3_mean is not None else "")
        )


class ReviewWidget(QWidget):
    """Per-level table, jump to a level, accept/reject, shift levels, recompute edited levels, save."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, run_dir: str | None = None):
        super().__init__()
        self.viewer = napari_viewer
        self.session = None
        self.path = QLineEdit(run_dir or "")
        self.path.setPlaceholderText("run folder (from volbmd run)")
        load = QPushButton("Load run")
        self.table = _table()
        self.status = QLabel("")
        buttons = QHBoxLayout()
        self.buttons = {}
        for name in ("Accept", "Reject", "Shift −1", "Shift +1", "Recompute", "Save"):
            b = QPushButton(name)
            buttons.addWidget(b)
            self.buttons[name] = b
        layout = QVBoxLayout(self)
        layout.addWidget(self.path)
        layout.addWidget(load)
        layout.addWidget(self.table)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        load.clicked.connect(lambda: self.load(self.path.text()))
        self.table.cellClicked.connect(lambda row, col: self.jump_to(row))
        self.buttons["Accept"].clicked.connect(lambda: self.decide("accepted"))
        self.buttons["Reject"].clicked.connect(lambda: self.decide("rejected"))
        self.buttons["Shift −1"].clicked.connect(lambda: self.shift(-1))
        self.buttons["Shift +1"].clicked.connect(lambda: self.shift(+1))
        self.buttons["Recompute"].clicked.connect(lambda: self.recompute())
        self.buttons["Save"].clicked.connect(lambda: self.save())
        if run_dir:
            self.load(run_dir)

    def load(self, run_dir: str) -> None:
        from volbmd.napari._layers import image_layer, labels_layer
        from volbmd.review import ReviewSession

        try:
            self.session = ReviewSession(run_dir)
        except Exception as exc:
            self.status.setText(f"error: {exc}")
            return
        s = self.session
        data, kw, _ = image_layer(s.scan, name="scan")
        self.viewer.add_image(data, **kw)
        data, kw, _ = labels_layer(s.labels, name="labels (edit me)")
        self.labels_layer = self.viewer.add_labels(data, **kw)
        self.rois_layer = None
        if s.rois is not None:  # what each BMD was measured on (updated by Recompute)
            rois_kw = {k: kw[k] for k in ("scale", "translate") if k in kw}
            self.rois_layer = self.viewer.add_labels(s.rois.copy(), name="ROIs (measured)", opacity=0.5, **rois_kw)
        self.refresh()
        self.status.setText(f"{Path(run_dir).name}: {len(s.rows())} levels")

    def refresh(self) -> None:
        _fill_table(self.table, self.session.rows())

    def _selected_level(self) -> str | None:
        rows = self.session.rows()
        r = self.table.currentRow()
        return rows[r]["level"] if 0 <= r < len(rows) else None

    def jump_to(self, row: int) -> None:
        rows = self.session.rows()
        centre = self.session.level_centre(rows[row]["level"])
        if centre is None:
            return
        layer = self.labels_layer
        world = [t + c * s for t, c, s in zip(layer.translate, centre, layer.scale)]
        self.viewer.dims.set_point(0, world[0])
        camera = self.viewer.scene.camera if hasattr(self.viewer, "scene") else self.viewer.camera
        camera.center = tuple(world)

    def decide(self, decision: str) -> None:
        level = self._selected_level()
        if level is not None:
            self.session.set_decision(level, decision)
            self.refresh()

    def shift(self, offset: int) -> None:
        self.session.shift_levels(offset)
        self.labels_layer.data = self.session.labels.array.copy()
        self.labels_layer.metadata["levels"] = dict(self.session.labels.labels)
        self.refresh()

    def recompute(self) -> None:
        self.session.update_labels(np.asarray(self.labels_layer.data))
        done = self.session.recompute()
        if self.rois_layer is not None:
            self.rois_layer.data = self.session.rois.copy()
        self.refresh()
        summ = self.session.report.get("summary", {})
        self.status.setText(f"recomputed {', '.join(done) or 'nothing'}; {summ.get('acr_category')}")

    def save(self) -> None:
        self.session.update_labels(np.asarray(self.labels_layer.data))
        self.session.recompute()
        paths = self.session.save()
        self.status.setText("saved " + ", ".join(p.name for p in paths.values()))

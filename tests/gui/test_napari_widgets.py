"""napari widgets, headless under Xvfb (pytest-xvfb) with napari's make_napari_viewer."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from test_cli import run

pytest.importorskip("napari")


@pytest.fixture(scope="module")
def demo_run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("widget_run") / "run"
    assert run("demo", "--out", out).returncode == 0
    return out


def test_analyze_widget_runs_pipeline(make_napari_viewer):
    from volbmd.napari._sample import demo_phantom
    from volbmd.napari._widgets import AnalyzeWidget

    viewer = make_napari_viewer()
    for data, kwargs, kind in demo_phantom():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = AnalyzeWidget(viewer)
    widget.backend.setCurrentIndex(3)  # masks from the labels layer
    report = widget.start(synchronous=True)
    assert report is not None, widget.status.text()
    assert widget.table.rowCount() == 3 and widget.table.item(0, 0).text() == "L1"
    assert "volbmd labels" in viewer.layers and "volbmd ROIs" in viewer.layers
    assert report.calibration.method == "internal" and "osteoporosis" in widget.status.text()


def test_analyze_widget_threaded(make_napari_viewer, qtbot):
    from volbmd.napari._sample import demo_phantom
    from volbmd.napari._widgets import AnalyzeWidget

    viewer = make_napari_viewer()
    for data, kwargs, kind in demo_phantom():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = AnalyzeWidget(viewer)
    widget.backend.setCurrentIndex(3)
    seen = []
    widget.stage_done.connect(seen.append)
    worker = widget.start()
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    qtbot.waitUntil(lambda: widget.table.rowCount() == 3, timeout=10_000)
    assert seen == ["load", "segment", "measure", "calibrate_classify"]  # the bar followed the stages
    assert widget.progress.value() == widget.progress.maximum()


def test_review_widget_on_demo_run(make_napari_viewer, demo_run_dir, tmp_path):
    from volbmd.napari._widgets import ReviewWidget

    run_dir = tmp_path / "run"
    shutil.copytree(demo_run_dir, run_dir)
    viewer = make_napari_viewer(show=True)
    widget = ReviewWidget(viewer, str(run_dir))
    viewer.window.add_dock_widget(widget, name="volbmd Review")
    assert widget.table.rowCount() == 3
    widget.table.setCurrentCell(2, 0)
    widget.jump_to(2)
    centre = widget.session.level_centre("L3")
    layer = widget.labels_layer
    assert viewer.dims.point[0] == pytest.approx(layer.translate[0] + centre[0] * layer.scale[0], abs=layer.scale[0])
    widget.table.setCurrentCell(0, 0)
    widget.decide("rejected")
    assert widget.table.item(0, 4).text() == "rejected"
    widget.recompute()
    assert "L3" in widget.session.report["summary"]["levels_used"]
    assert np.array_equal(widget.rois_layer.data, widget.session.rois)  # the measured ROIs, shown
    widget.save()
    assert (run_dir / "review.json").exists() and (run_dir / "labels_reviewed.nii.gz").exists()
    shot = tmp_path / "review_widget.png"
    widget.grab().save(str(shot))
    assert shot.stat().st_size > 5_000
    canvas = viewer.screenshot(canvas_only=True)
    assert canvas.ndim == 3 and np.asarray(canvas)[..., :3].std() > 1.0  # not a blank canvas


def test_mri_result_opens_with_a_pdff_colour_bar(make_napari_viewer, tmp_path):
    from volbmd.mri import MultiEchoData, separate_fat_water
    from volbmd.mri.outputs import MAP_FILES, MriReport, write_mri_outputs
    from volbmd.napari._mri import add_mri_layers

    rng = np.random.default_rng(0)
    te = (1.2e-3, 2.4e-3, 3.6e-3, 4.8e-3)
    signal = rng.standard_normal((2, 8, 8, 4)) + 1j * rng.standard_normal((2, 8, 8, 4))
    data = MultiEchoData(signal, te, 3.0)
    maps = separate_fat_water(data)
    volumes = {name: data.volume(getattr(maps, attr)) for name, attr in MAP_FILES.items()}
    write_mri_outputs(
        tmp_path / "mri", volumes, MriReport(volbmd_version="0", kind="fat_water_separation", input={}, method={})
    )
    viewer = make_napari_viewer()
    layers = add_mri_layers(viewer, tmp_path / "mri")
    assert [layer.name for layer in layers] == ["water", "fat", "r2star", "fieldmap", "pdff"]
    pdff = viewer.layers["pdff"]
    assert pdff.colorbar.visible and pdff.colormap.name == "magma" and tuple(pdff.contrast_limits) == (0.0, 100.0)
    assert not viewer.layers["water"].colorbar.visible


def test_analyze_widget_with_a_bmd_model_shows_both_bmds(make_napari_viewer, tmp_path):
    from volbmd.models.bmd_regressor import BmdTrainingOptions, load_crops, read_bmd_manifest, train_bmd_regressor
    from volbmd.models.synthetic import SyntheticCohortOptions, make_synthetic_cohort
    from volbmd.napari._sample import demo_phantom
    from volbmd.napari._widgets import AnalyzeWidget

    rows = read_bmd_manifest(make_synthetic_cohort(tmp_path / "cohort", SyntheticCohortOptions(n_scans=3, test_share=0.0)))
    crops, targets, groups = load_crops(rows)
    options = BmdTrainingOptions(folds=2, max_epochs=2, batch_size=4, init_features=8, growth_rate=4, block_config=(2, 2))
    train_bmd_regressor(crops, targets, groups, tmp_path / "model.pt", options)
    viewer = make_napari_viewer()
    for data, kwargs, kind in demo_phantom():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = AnalyzeWidget(viewer)
    widget.backend.setCurrentIndex(3)  # masks from the labels layer
    widget.bmd_model.setText(str(tmp_path))
    report = widget.start(synchronous=True)
    assert report is not None, widget.status.text()
    assert all(v.bmd_dl_mg_cm3 is not None for v in report.vertebrae)
    assert "(DL " in widget.table.item(0, 2).text()

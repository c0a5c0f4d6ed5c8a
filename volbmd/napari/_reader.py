"""npe2 reader: any scan volbmd reads, volbmd run folders (scan, labels, bodies, ROIs, report) and
MRI result folders (PDFF with its colour scale, water, fat, R2*, field map)."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["get_reader", "read_path"]


def _is_run(path: Path) -> bool:
    return path.is_dir() and (path / "report.json").is_file() and (path / "labels.nii.gz").is_file()


def _is_mri_run(path: Path) -> bool:
    if not (path.is_dir() and (path / "report.json").is_file() and (path / "pdff.nii.gz").is_file()):
        return False
    try:
        return json.loads((path / "report.json").read_text()).get("modality") == "MR"
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


#: MRI maps: file, colormap, contrast limits (None: the data's), visible at first.
MRI_LAYERS = (
    ("water.nii.gz", "gray", None, False),
    ("fat.nii.gz", "gray", None, False),
    ("r2star.nii.gz", "viridis", (0.0, 200.0), False),
    ("fieldmap.nii.gz", "twilight_shifted", None, False),
    ("pdff.nii.gz", "magma", (0.0, 100.0), True),
)


def read_mri_run(path: Path) -> list[tuple]:
    """The maps of an MRI result folder as image layers; PDFF (percent, 0–100) on top, its layer's
    metadata asking for a colour bar (``volbmd mri view`` shows it)."""
    from volbmd.io import load_volume
    from volbmd.napari._layers import image_layer

    layers = []
    for file, colormap, limits, visible in MRI_LAYERS:
        if not (path / file).is_file():
            continue
        data, kwargs, kind = image_layer(load_volume(path / file), name=file.split(".")[0])
        kwargs.update(colormap=colormap, visible=visible)
        kwargs["metadata"]["colorbar"] = file == "pdff.nii.gz"
        if limits is not None:
            kwargs["contrast_limits"] = limits
        layers.append((data, kwargs, kind))
    return layers


def get_reader(path):
    """Return a reader function if volbmd can open ``path``, else None (napari tries others)."""
    if isinstance(path, list):
        path = path[0] if len(path) == 1 else None
    if path is None:
        return None
    p = Path(path)
    name = p.name.lower()
    if _is_run(p) or p.is_dir() or name.endswith((".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".zarr")):
        return read_path
    return None


def read_path(path) -> list[tuple]:
    from volbmd.io import load_volume
    from volbmd.napari._layers import image_layer, labels_layer
    from volbmd.volume import LabelMap

    p = Path(path[0] if isinstance(path, list) else path)
    if _is_mri_run(p):
        return read_mri_run(p)
    if not _is_run(p):
        return [image_layer(load_volume(p), name=p.name)]
    from volbmd.labels import load_label_scheme
    from volbmd.review import find_scan

    report = json.loads((p / "report.json").read_text())
    verse = load_label_scheme("verse")
    names = {v["level"]: verse[v["level"]] for v in report["vertebrae"] if v["level"] in verse}
    scan = load_volume(find_scan(p))
    layers = [image_layer(scan, name="scan")]
    for file, opacity in (("labels.nii.gz", 0.35), ("bodies.nii.gz", 0.0), ("rois.nii.gz", 0.6)):
        if (p / file).exists():
            vol = load_volume(p / file)
            data = LabelMap.on_grid_of(scan, vol.array, names, source=str(p / file))
            layer = labels_layer(data, name=file.split(".")[0], opacity=opacity)
            layer[1]["metadata"]["report"] = report if file == "labels.nii.gz" else None
            layer[1]["metadata"]["run_dir"] = str(p)
            layers.append(layer)
    return layers

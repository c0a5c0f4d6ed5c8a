"""npe2 reader: any scan volbmd reads, and volbmd run folders (scan, labels, bodies, ROIs, report)."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["get_reader", "read_path"]


def _is_run(path: Path) -> bool:
    return path.is_dir() and (path / "report.json").is_file() and (path / "labels.nii.gz").is_file()


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

"""MRI result folders in a napari viewer: the maps, and a colour bar on the PDFF layer."""

from __future__ import annotations

from pathlib import Path

__all__ = ["add_mri_layers"]


def add_mri_layers(viewer, run_dir: str | Path) -> list:
    """Add the maps of ``run_dir`` to ``viewer``; layers whose metadata ask for it show a colour bar."""
    from volbmd.napari._reader import read_mri_run

    layers = []
    for data, kwargs, _kind in read_mri_run(Path(run_dir)):
        layer = viewer.add_image(data, **kwargs)
        if kwargs["metadata"].get("colorbar"):
            layer.colorbar.visible = True
        layers.append(layer)
    return layers

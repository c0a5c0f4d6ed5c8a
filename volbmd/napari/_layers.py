"""Volume / LabelMap → napari layer data (scale = spacing, translate = origin), no napari import.

Layers are shown in the canonical LPS frame, where the array axes are the patient axes, so scale
and translate describe the geometry exactly.
"""

from __future__ import annotations

from volbmd.geometry import canonicalize
from volbmd.volume import LabelMap, Volume

__all__ = ["image_layer", "labels_layer", "BONE_WINDOW"]

BONE_WINDOW = (-250.0, 1250.0)


def _geometry(volume: Volume) -> dict:
    return {"scale": tuple(volume.spacing_mm), "translate": tuple(volume.origin_lps_mm[::-1])}


def image_layer(volume: Volume, name: str = "scan") -> tuple:
    canon, _ = canonicalize(volume)
    ct = canon.metadata.get("modality") in (None, "CT")
    kwargs = {
        "name": name,
        **_geometry(canon),
        "colormap": "gray",
        "metadata": {k: v for k, v in canon.metadata.items() if k != "phi" and not k.startswith("_")},
    }
    if ct:
        kwargs["contrast_limits"] = BONE_WINDOW
    return canon.array, kwargs, "image"


def labels_layer(labels: LabelMap, name: str = "labels", opacity: float = 0.45) -> tuple:
    canon, _ = canonicalize(labels)
    kwargs = {"name": name, **_geometry(canon), "opacity": opacity, "metadata": {"levels": dict(labels.labels)}}
    return canon.array, kwargs, "labels"

"""A plain summary of a volume: what ``volbmd info`` prints, as data."""

from __future__ import annotations

import numpy as np

from volbmd.geometry import canonicalize, oblique_angle_deg, orientation_code
from volbmd.volume import Volume

__all__ = ["describe_volume"]


def describe_volume(volume: Volume, *, show_phi: bool = False) -> dict:
    """Shape, spacing, orientation, value range and scanner metadata of ``volume``.

    Patient identifiers (``metadata["phi"]``) are left out unless ``show_phi``.
    """
    arr = volume.array
    canonical, _ = canonicalize(volume)
    meta = {k: v for k, v in volume.metadata.items() if k != "phi" and not k.startswith("_")}
    out = {
        "source": volume.source,
        "shape_zyx": list(volume.shape),
        "size_xyz": list(volume.shape[::-1]),
        "spacing_mm_zyx": [round(float(s), 6) for s in volume.spacing_mm],
        "origin_lps_mm": [round(float(v), 4) for v in volume.origin_lps_mm],
        "orientation": orientation_code(volume.direction_lps),
        "oblique_deg": round(oblique_angle_deg(volume.direction_lps), 3),
        "canonical": {
            "shape_zyx": list(canonical.shape),
            "spacing_mm_zyx": [round(float(s), 6) for s in canonical.spacing_mm],
            "origin_lps_mm": [round(float(v), 4) for v in canonical.origin_lps_mm],
        },
        "dtype": str(arr.dtype),
        "value_range": [float(arr.min()), float(arr.max())],
        "value_unit": "HU" if (meta.get("modality") in (None, "CT")) else "signal",
        "field_of_view_mm_zyx": [round(float(n * s), 2) for n, s in zip(volume.shape, volume.spacing_mm)],
        "metadata": meta,
    }
    out["value_percentiles_1_99"] = [float(v) for v in np.percentile(arr[:: max(1, arr.shape[0] // 32)], [1, 99])]
    if show_phi:
        out["phi"] = dict(volume.metadata.get("phi", {}))
    return out

"""Slow but obviously correct numpy/scipy references for the Numba kernels."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def edt_squared_mm2(mask, spacing_mm):
    """scipy's exact EDT with the array border as background."""
    padded = np.pad(np.asarray(mask) != 0, 1)
    return ndi.distance_transform_edt(padded, sampling=spacing_mm)[1:-1, 1:-1, 1:-1] ** 2


def strip_cortex(mask, spacing_mm, depth_mm):
    if depth_mm == 0:
        return np.asarray(mask) != 0
    return np.sqrt(edt_squared_mm2(mask, spacing_mm)) > depth_mm


def label_bboxes(labels, ids):
    out = {}
    objects = ndi.find_objects(labels)
    for i in ids:
        count = int((labels == i).sum())
        box = objects[i - 1] if count and i - 1 < len(objects) else None
        out[i] = (count, box)
    return out


def value_statistics(values):
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return None
    out = {"n": values.size, "mean": values.mean(), "sd": values.std(), "median": np.median(values)}
    for p in (5, 25, 50, 75, 95):
        out[f"p{p}"] = np.percentile(values, p)
    return out

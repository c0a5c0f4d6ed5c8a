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


def geodesic_grow(seeds, weight, spacing_mm):
    """One skimage MCP_Geometric run per label; each voxel takes the cheapest label.

    Returns (labels, cost, unique): ``unique`` marks voxels whose best label wins by a clear margin
    (exact ties may be broken differently)."""
    from skimage.graph import MCP_Geometric

    seeds = np.asarray(seeds)
    weight = np.asarray(weight, dtype=np.float64)
    passable = np.isfinite(weight) & (weight > 0)
    ids = [int(i) for i in np.unique(seeds[(seeds > 0) & passable])]
    if not ids:
        return np.zeros(seeds.shape, np.int32), np.full(seeds.shape, np.inf), np.ones(seeds.shape, bool)
    costs = []
    for i in ids:
        starts = [tuple(p) for p in np.argwhere((seeds == i) & passable)]
        mcp = MCP_Geometric(np.where(passable, weight, -1.0), sampling=tuple(spacing_mm))
        c, _ = mcp.find_costs(starts)
        costs.append(np.where(passable, c, np.inf))
    costs = np.stack(costs)
    best = costs.min(axis=0)
    labels = np.asarray(ids, np.int32)[costs.argmin(axis=0)]
    labels[~np.isfinite(best)] = 0
    if len(ids) == 1:
        return labels, best, np.ones(seeds.shape, bool)
    ordered = np.sort(costs, axis=0)
    with np.errstate(invalid="ignore"):
        unique = ~np.isfinite(ordered[1]) | (ordered[1] - ordered[0] > 1e-9)
    return labels, best, unique

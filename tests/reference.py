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


def varpro_residual_curve(signal_n, te_s, fat_phasor, psi_grid_hz, r2star_grid):
    """One voxel's residual at each field map, least over R2*, by plain least squares."""
    te = np.asarray(te_s, np.float64)
    out = []
    for psi in psi_grid_hz:
        best = np.inf
        for r2 in r2star_grid:
            decay = np.exp(-r2 * te)
            a = np.stack([decay, fat_phasor * decay], axis=1) * np.exp(2j * np.pi * psi * te)[:, None]
            coef, *_ = np.linalg.lstsq(a, signal_n, rcond=None)
            best = min(best, float(np.sum(np.abs(signal_n - a @ coef) ** 2)))
        out.append(best)
    return np.asarray(out)


def fit_at_fieldmap(signal, te_s, fat_phasor, psi_hz, r2star_grid):
    te = np.asarray(te_s, np.float64)
    water, fat, r2s = [], [], []
    for s, psi in zip(signal, psi_hz):
        best = (np.inf, 0j, 0j, 0.0)
        for r2 in r2star_grid:
            decay = np.exp(-r2 * te)
            a = np.stack([decay, fat_phasor * decay], axis=1) * np.exp(2j * np.pi * psi * te)[:, None]
            coef, *_ = np.linalg.lstsq(a, s, rcond=None)
            res = float(np.sum(np.abs(s - a @ coef) ** 2))
            if res < best[0]:
                best = (res, coef[0], coef[1], r2)
        water.append(best[1])
        fat.append(best[2])
        r2s.append(best[3])
    return np.asarray(water), np.asarray(fat), np.asarray(r2s)


def grow_fieldmap(cand_psi, n_cand, weight, foreground, shape, period):
    """Region growing in plain Python (heapq), the same rule as the kernel."""
    import heapq

    nz, ny, nx = shape
    n = nz * ny * nx
    psi = cand_psi[:, 0].astype(np.float64).copy()
    placed = np.zeros(n, bool)
    queued = np.zeros(n, bool)

    def neighbours(v):
        z, y, x = np.unravel_index(v, shape)
        for dz, dy, dx in ((-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -1), (0, 0, 1)):
            zz, yy, xx = z + dz, y + dy, x + dx
            if 0 <= zz < nz and 0 <= yy < ny and 0 <= xx < nx:
                yield int(np.ravel_multi_index((zz, yy, xx), shape))

    for s in np.argsort(-weight, kind="quicksort"):
        if placed[s] or not foreground[s]:
            continue
        heap = [(-weight[s], int(s))]
        queued[s] = True
        first = True
        while heap:
            _, v = heapq.heappop(heap)
            if not first:
                placed_nb = [u for u in neighbours(v) if placed[u]]
                wsum = sum(weight[u] for u in placed_nb)
                if wsum > 0:
                    pred = sum(weight[u] * psi[u] for u in placed_nb) / wsum
                    options = []
                    for k in range(n_cand[v]):
                        c = cand_psi[v, k]
                        if period > 0:
                            c += period * np.floor((pred - c) / period + 0.5)
                        options.append((abs(c - pred), k, c))
                    psi[v] = min(options)[2]
            first = False
            placed[v] = True
            for u in neighbours(v):
                if foreground[u] and not queued[u]:
                    queued[u] = True
                    heapq.heappush(heap, (-weight[u], u))
    return psi

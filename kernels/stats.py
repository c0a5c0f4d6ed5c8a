"""One-pass label bounding boxes and exact order statistics of masked voxels."""

from __future__ import annotations

import numpy as np

from volbmd_kernels._options import njit, run_in_chunks

__all__ = ["label_bboxes", "masked_values", "value_statistics", "PERCENTILES"]

#: Percentiles reported for every ROI, computed like numpy's default (linear interpolation).
PERCENTILES = (5.0, 25.0, 50.0, 75.0, 95.0)


@njit()
def _slice_bboxes(labels, ids_lookup, per, z_start, z_stop):
    """Fill ``per[z]`` (count, ymin, ymax, xmin, xmax for each id) for z in [z_start, z_stop)."""
    nz, ny, nx = labels.shape
    n_ids = per.shape[1]
    for z in range(z_start, z_stop):
        for i in range(n_ids):
            per[z, i, 1] = ny
            per[z, i, 2] = -1
            per[z, i, 3] = nx
            per[z, i, 4] = -1
        for y in range(ny):
            for x in range(nx):
                v = labels[z, y, x]
                if v <= 0 or v >= ids_lookup.shape[0]:
                    continue
                i = ids_lookup[v]
                if i < 0:
                    continue
                per[z, i, 0] += 1
                if y < per[z, i, 1]:
                    per[z, i, 1] = y
                if y > per[z, i, 2]:
                    per[z, i, 2] = y
                if x < per[z, i, 3]:
                    per[z, i, 3] = x
                if x > per[z, i, 4]:
                    per[z, i, 4] = x


@njit()
def _reduce_bboxes(per):
    nz, n_ids, _ = per.shape
    out = np.zeros((n_ids, 7), np.int64)  # count, z0, z1, y0, y1, x0, x1 (inclusive)
    for i in range(n_ids):
        out[i, 1] = nz
        out[i, 2] = -1
        out[i, 3] = 1 << 40
        out[i, 4] = -1
        out[i, 5] = 1 << 40
        out[i, 6] = -1
        for z in range(nz):
            c = per[z, i, 0]
            if c == 0:
                continue
            out[i, 0] += c
            if z < out[i, 1]:
                out[i, 1] = z
            if z > out[i, 2]:
                out[i, 2] = z
            out[i, 3] = min(out[i, 3], per[z, i, 1])
            out[i, 4] = max(out[i, 4], per[z, i, 2])
            out[i, 5] = min(out[i, 5], per[z, i, 3])
            out[i, 6] = max(out[i, 6], per[z, i, 4])
    return out


def label_bboxes(labels: np.ndarray, ids) -> dict[int, tuple[int, tuple[slice, slice, slice] | None]]:
    """Voxel count and bounding box of each label id, in one pass over the volume.

    Args:
        labels: (z, y, x) integer label array.
        ids: label ids to look for (positive integers).
    Returns:
        id → (n_voxels, (slice_z, slice_y, slice_x)); the box is None for an absent id.
    """
    ids = [int(i) for i in ids]
    if any(i <= 0 for i in ids):
        raise ValueError("label ids must be positive")
    labels = np.asarray(labels)  # strided views (a reoriented scan) are fine: no copy
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must be integers, got {labels.dtype}")
    lookup = np.full(max(ids, default=0) + 1, -1, np.int64)
    for n, i in enumerate(ids):
        lookup[i] = n
    per = np.zeros((labels.shape[0], len(ids), 5), np.int64)
    run_in_chunks(_slice_bboxes, labels.shape[0], labels.shape[1] * labels.shape[2], labels, lookup, per)
    out = _reduce_bboxes(per)
    result = {}
    for n, i in enumerate(ids):
        count, z0, z1, y0, y1, x0, x1 = (int(v) for v in out[n])
        box = (slice(z0, z1 + 1), slice(y0, y1 + 1), slice(x0, x1 + 1)) if count else None
        result[i] = (count, box)
    return result


@njit()
def masked_values(values, mask):
    """The values where mask is nonzero, as float64, in C order."""
    n = 0
    flat_m = mask.ravel()
    flat_v = values.ravel()
    for i in range(flat_m.size):
        if flat_m[i]:
            n += 1
    out = np.empty(n, np.float64)
    j = 0
    for i in range(flat_m.size):
        if flat_m[i]:
            out[j] = flat_v[i]
            j += 1
    return out


@njit()
def _sorted_stats(sorted_values, percentiles):
    n = sorted_values.size
    total = 0.0
    for i in range(n):
        total += sorted_values[i]
    mean = total / n
    ss = 0.0
    for i in range(n):
        d = sorted_values[i] - mean
        ss += d * d
    sd = np.sqrt(ss / n)
    pct = np.empty(percentiles.size, np.float64)
    for k in range(percentiles.size):
        pos = percentiles[k] / 100.0 * (n - 1)
        lo = int(np.floor(pos))
        hi = min(lo + 1, n - 1)
        t = pos - lo
        a = sorted_values[lo]
        b = sorted_values[hi]
        # numpy's _lerp: exact at both ends
        diff = b - a
        pct[k] = b - diff * (1.0 - t) if t >= 0.5 else a + diff * t
    return mean, sd, pct


def value_statistics(values: np.ndarray) -> dict[str, float] | None:
    """n, mean, population SD (ddof=0), exact median and percentiles (numpy's linear method).

    Returns None for an empty input.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        return None
    s = np.sort(values, kind="quicksort")
    mean, sd, pct = _sorted_stats(s, np.asarray(PERCENTILES, np.float64))
    out = {"n": int(values.size), "mean": float(mean), "sd": float(sd), "median": float(pct[2])}
    for p, v in zip(PERCENTILES, pct):
        out[f"p{int(p)}"] = float(v)
    return out

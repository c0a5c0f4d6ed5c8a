"""Multi-seed weighted geodesic growth on a 3D grid (Dijkstra, 26-neighbourhood, spacing in mm).

Every traversable voxel gets the label of the seed it reaches most cheaply. A step between two
neighbouring voxel centres costs its length in mm times the mean of the two voxels' weights, the
same rule as ``skimage.graph.MCP_Geometric(weights, sampling=spacing)`` (with ``up_factor`` 1);
the tests compare the two.
A voxel is traversable when its weight is finite and positive. Seeds are the voxels with a label
above 0 that are traversable; other labelled voxels are ignored.

Used to hand the posterior elements to the vertebral body they join: weights grow where bone is
dim, so a path through a facet joint or an interspinous gap costs more than one along the arch.
An optional ``up_factor`` makes steps towards higher axis-0 indices (superior, in the canonical
frame) dearer for all labels but one: a vertebra's inferior articular and spinous processes hang
down from it, so the vertebra below should not climb into them through a facet joint.
"""

from __future__ import annotations

import heapq

import numpy as np

from volbmd_kernels._options import njit

__all__ = ["geodesic_grow"]


@njit()
def _grow(seeds, weight, sz, sy, sx, up_factor, free_label):
    nz, ny, nx = seeds.shape
    n = nz * ny * nx
    lab = np.zeros(n, np.int32)
    dist = np.full(n, np.inf)
    s = seeds.ravel()
    w = weight.ravel()
    offs = np.empty((26, 4), np.float64)
    m = 0
    for dz in (-1, 0, 1):
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if dz == 0 and dy == 0 and dx == 0:
                    continue
                offs[m, 0] = dz
                offs[m, 1] = dy
                offs[m, 2] = dx
                offs[m, 3] = np.sqrt((dz * sz) ** 2 + (dy * sy) ** 2 + (dx * sx) ** 2)
                m += 1
    heap = [(0.0, np.int64(0))]
    heap.pop()
    for i in range(n):
        if s[i] > 0 and np.isfinite(w[i]) and w[i] > 0:
            lab[i] = s[i]
            dist[i] = 0.0
            heap.append((0.0, np.int64(i)))
    heapq.heapify(heap)
    plane = ny * nx
    while len(heap) > 0:
        d, i = heapq.heappop(heap)
        if d > dist[i]:
            continue
        z = i // plane
        r = i - z * plane
        y = r // nx
        x = r - y * nx
        for k in range(26):
            zz = z + int(offs[k, 0])
            yy = y + int(offs[k, 1])
            xx = x + int(offs[k, 2])
            if zz < 0 or zz >= nz or yy < 0 or yy >= ny or xx < 0 or xx >= nx:
                continue
            j = (zz * ny + yy) * nx + xx
            wj = w[j]
            if not (np.isfinite(wj) and wj > 0):
                continue
            step = offs[k, 3]
            if offs[k, 0] > 0 and lab[i] != free_label:
                step *= up_factor
            nd = d + step * (0.5 * w[i] + 0.5 * wj)
            if nd < dist[j]:
                dist[j] = nd
                lab[j] = lab[i]
                heapq.heappush(heap, (nd, np.int64(j)))
    return lab.reshape(seeds.shape), dist.reshape(seeds.shape)


def geodesic_grow(
    seeds: np.ndarray,
    weight: np.ndarray,
    spacing_mm: tuple[float, float, float],
    up_factor: float = 1.0,
    free_label: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Grow integer ``seeds`` (0 = none) through voxels of finite positive ``weight``.

    ``up_factor`` multiplies the cost of every step towards a higher index along axis 0, except
    for the growth of ``free_label`` (1: the plain geodesic distance).
    Returns (labels int32, cost float64); voxels no seed reaches get label 0 and cost inf."""
    seeds = np.ascontiguousarray(seeds, dtype=np.int32)
    weight = np.ascontiguousarray(weight, dtype=np.float64)
    if seeds.ndim != 3 or seeds.shape != weight.shape:
        raise ValueError(f"seeds and weight must be 3D arrays of one shape, got {seeds.shape} and {weight.shape}")
    sz, sy, sx = (float(v) for v in spacing_mm)
    if min(sz, sy, sx) <= 0:
        raise ValueError(f"spacing must be positive, got {spacing_mm}")
    if not up_factor > 0:
        raise ValueError(f"up_factor must be positive, got {up_factor}")
    return _grow(seeds, weight, sz, sy, sx, float(up_factor), int(free_label))

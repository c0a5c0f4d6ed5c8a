"""Fat–water separation of multi-echo gradient-echo signals (VARPRO) and a spatially regularised
field map by region growing. Each kernel has a plain numpy reference in tests/reference.py.

Signal model (one voxel, echo n at time t_n):
``S_n = (W + F·c_n) · exp(i2π ψ t_n) · exp(−R2* t_n)``, with ``c_n = Σ_p a_p exp(i2π f_p t_n)`` the
fat spectrum's phasor. For a fixed field map ψ and R2*, W and F are linear; variable projection
leaves the residual ``‖S‖² − ‖Q_r^H y‖²`` with ``y_n = S_n exp(−i2π ψ t_n)`` and ``Q_r`` an
orthonormal basis of the two columns ``exp(−R2* t)`` and ``c·exp(−R2* t)``.
"""

from __future__ import annotations

import heapq

import numpy as np

from volbmd_kernels._options import njit, run_in_chunks

__all__ = ["projection_bases", "varpro_candidates", "fit_at_fieldmap", "grow_fieldmap"]


def projection_bases(te_s: np.ndarray, fat_phasor: np.ndarray, r2star_grid: np.ndarray) -> np.ndarray:
    """Conjugated orthonormal bases ``(R, 2, N)`` of the model's two columns at each R2* of the grid."""
    te_s = np.asarray(te_s, np.float64)
    out = np.empty((len(r2star_grid), 2, len(te_s)), np.complex128)
    for i, r2 in enumerate(r2star_grid):
        decay = np.exp(-float(r2) * te_s)
        a = np.stack([decay, np.asarray(fat_phasor) * decay], axis=1).astype(np.complex128)
        q, _ = np.linalg.qr(a)
        out[i] = q.conj().T
    return out


@njit()
def _residual_curve(signal, v, demod, bases, curve):
    """``curve[p]``: the residual at field map ``p`` of the grid, the least over the R2* grid."""
    n_psi, n_echo = demod.shape
    n_r2 = bases.shape[0]
    y = np.empty(n_echo, np.complex128)
    energy = 0.0
    for n in range(n_echo):
        s = signal[v, n]
        energy += s.real * s.real + s.imag * s.imag
    for p in range(n_psi):
        for n in range(n_echo):
            y[n] = signal[v, n] * demod[p, n]
        best = np.inf
        for r in range(n_r2):
            d0 = 0j
            d1 = 0j
            for n in range(n_echo):
                d0 += bases[r, 0, n] * y[n]
                d1 += bases[r, 1, n] * y[n]
            res = energy - (d0.real * d0.real + d0.imag * d0.imag) - (d1.real * d1.real + d1.imag * d1.imag)
            if res < best:
                best = res
        curve[p] = max(best, 0.0)


@njit()
def _candidates_range(signal, demod, bases, psi_grid, periodic, cand_psi, cand_res, n_cand, start, stop):
    n_psi = demod.shape[0]
    k_max = cand_psi.shape[1]
    step = psi_grid[1] - psi_grid[0]
    curve = np.empty(n_psi, np.float64)
    for v in range(start, stop):
        _residual_curve(signal, v, demod, bases, curve)
        count = 0
        for p in range(n_psi):
            if periodic:
                left = curve[(p - 1) % n_psi]
                right = curve[(p + 1) % n_psi]
            else:
                left = curve[p - 1] if p > 0 else np.inf
                right = curve[p + 1] if p < n_psi - 1 else np.inf
            c = curve[p]
            # a local minimum (the first of a flat run counts once)
            if not (c < left and c <= right):
                continue
            offset = 0.0
            if np.isfinite(left) and np.isfinite(right):
                denom = left - 2.0 * c + right
                if denom > 0.0:
                    offset = 0.5 * (left - right) / denom
            psi = psi_grid[p] + offset * step
            res = c - 0.25 * (left - right) * offset if offset != 0.0 else c
            # keep the k_max lowest, sorted by residual
            if count < k_max:
                j = count
                count += 1
            elif res < cand_res[v, k_max - 1]:
                j = k_max - 1
            else:
                continue
            while j > 0 and cand_res[v, j - 1] > res:
                cand_res[v, j] = cand_res[v, j - 1]
                cand_psi[v, j] = cand_psi[v, j - 1]
                j -= 1
            cand_res[v, j] = res
            cand_psi[v, j] = psi
        if count == 0:  # a flat curve (no signal): the grid's first point
            cand_psi[v, 0] = psi_grid[0]
            cand_res[v, 0] = curve[0]
            count = 1
        n_cand[v] = count


def varpro_candidates(
    signal: np.ndarray,
    te_s: np.ndarray,
    fat_phasor: np.ndarray,
    psi_grid_hz: np.ndarray,
    r2star_grid: np.ndarray,
    *,
    periodic: bool,
    max_candidates: int = 4,
):
    """The local minima of each voxel's VARPRO residual over the field-map grid (R2* minimised).

    ``signal``: ``(V, N)`` complex echoes. ``psi_grid_hz`` evenly spaced; ``periodic`` when it spans
    one period of the residual (evenly spaced echoes: ``1/ΔTE``). Returns ``(psi, residual, count)``:
    ``(V, K)`` field maps in Hz (parabola-refined) and residuals, lowest residual first, and how
    many of the ``K`` are filled per voxel (at least one).
    """
    signal = np.ascontiguousarray(signal, np.complex128)
    psi_grid = np.asarray(psi_grid_hz, np.float64)
    te = np.asarray(te_s, np.float64)
    demod = np.exp(-2j * np.pi * psi_grid[:, None] * te[None, :])
    bases = projection_bases(te, fat_phasor, np.asarray(r2star_grid, np.float64))
    n_vox = signal.shape[0]
    cand_psi = np.zeros((n_vox, max_candidates), np.float64)
    cand_res = np.full((n_vox, max_candidates), np.inf, np.float64)
    n_cand = np.zeros(n_vox, np.int64)
    work = len(psi_grid) * len(r2star_grid) * len(te) // 4 + 1
    run_in_chunks(_candidates_range, n_vox, work, signal, demod, bases, psi_grid, bool(periodic), cand_psi, cand_res, n_cand)
    return cand_psi, cand_res, n_cand


@njit()
def _fit_range(signal, te, fat_phasor, psi, r2_grid, water, fat, r2star, start, stop):
    n_echo = te.shape[0]
    y = np.empty(n_echo, np.complex128)
    for v in range(start, stop):
        for n in range(n_echo):
            y[n] = signal[v, n] * np.exp(-2j * np.pi * psi[v] * te[n])
        best = np.inf
        for r2 in r2_grid:
            # normal equations of the 2-column model [d, c·d], d = exp(−R2* t)
            g00 = 0.0
            g11 = 0.0
            g01 = 0j
            b0 = 0j
            b1 = 0j
            for n in range(n_echo):
                d = np.exp(-r2 * te[n])
                a1 = fat_phasor[n] * d
                g00 += d * d
                g11 += a1.real * a1.real + a1.imag * a1.imag
                g01 += d * a1  # conj(a0)·a1 with a0 real
                b0 += d * y[n]
                b1 += np.conj(a1) * y[n]
            det = g00 * g11 - (g01.real * g01.real + g01.imag * g01.imag)
            if det <= 0.0:
                continue
            w = (g11 * b0 - g01 * b1) / det
            f = (g00 * b1 - np.conj(g01) * b0) / det
            res = 0.0
            for n in range(n_echo):
                d = np.exp(-r2 * te[n])
                e = y[n] - (w + f * fat_phasor[n]) * d
                res += e.real * e.real + e.imag * e.imag
            if res < best:
                best = res
                water[v] = w
                fat[v] = f
                r2star[v] = r2


def fit_at_fieldmap(signal, te_s, fat_phasor, psi_hz, r2star_grid):
    """Water and fat (complex, at echo time 0) and R2* (the grid value of least residual) of each
    voxel at its field map ``psi_hz`` (``(V,)``)."""
    signal = np.ascontiguousarray(signal, np.complex128)
    n_vox = signal.shape[0]
    water = np.zeros(n_vox, np.complex128)
    fat = np.zeros(n_vox, np.complex128)
    r2star = np.zeros(n_vox, np.float64)
    run_in_chunks(
        _fit_range,
        n_vox,
        len(r2star_grid) * len(te_s),
        signal,
        np.asarray(te_s, np.float64),
        np.asarray(fat_phasor, np.complex128),
        np.ascontiguousarray(psi_hz, np.float64),
        np.asarray(r2star_grid, np.float64),
        water,
        fat,
        r2star,
    )
    return water, fat, r2star


@njit()
def _nearest_candidate(cand_psi, count, v, prediction, period):
    """The candidate of voxel ``v`` (shifted by whole periods when ``period`` > 0) closest to
    ``prediction``."""
    best_cost = np.inf
    best = prediction
    for k in range(count):
        psi = cand_psi[v, k]
        if period > 0.0:
            psi += period * np.floor((prediction - psi) / period + 0.5)
        cost = abs(psi - prediction)
        if cost < best_cost:
            best_cost = cost
            best = psi
    return best


@njit()
def grow_fieldmap(cand_psi, n_cand, weight, foreground, shape, period):
    """A smooth field map by region growing over ``foreground`` (flat ``(V,)`` voxels of a
    ``shape`` grid, face neighbours): each connected part starts at its heaviest voxel (``weight``,
    e.g. the signal magnitude) with that voxel's best candidate; voxels join heaviest first, each
    taking the candidate nearest the weighted mean field map of its placed neighbours. Voxels
    outside the foreground take their best candidate. Returns ``(psi (V,), order (V,))``, order
    being the voxel's place in the growth (-1 outside)."""
    nz, ny, nx = shape
    n_vox = nz * ny * nx
    psi = np.empty(n_vox, np.float64)
    placed = np.zeros(n_vox, np.bool_)
    queued = np.zeros(n_vox, np.bool_)
    order = np.full(n_vox, -1, np.int64)
    for v in range(n_vox):
        psi[v] = cand_psi[v, 0]
    seeds = np.argsort(-weight)
    n_placed = 0
    dz = np.array([-1, 1, 0, 0, 0, 0])
    dy = np.array([0, 0, -1, 1, 0, 0])
    dx = np.array([0, 0, 0, 0, -1, 1])
    for s in seeds:
        if placed[s] or not foreground[s]:
            continue
        heap = [(-weight[s], s)]
        queued[s] = True
        first = True
        while len(heap) > 0:
            _, v = heapq.heappop(heap)
            z = v // (ny * nx)
            y = (v // nx) % ny
            x = v % nx
            if first:
                psi[v] = cand_psi[v, 0]
                first = False
            else:
                total = 0.0
                wsum = 0.0
                for j in range(6):
                    zz, yy, xx = z + dz[j], y + dy[j], x + dx[j]
                    if zz < 0 or zz >= nz or yy < 0 or yy >= ny or xx < 0 or xx >= nx:
                        continue
                    u = (zz * ny + yy) * nx + xx
                    if placed[u]:
                        total += weight[u] * psi[u]
                        wsum += weight[u]
                if wsum > 0.0:
                    psi[v] = _nearest_candidate(cand_psi, n_cand[v], v, total / wsum, period)
            placed[v] = True
            order[v] = n_placed
            n_placed += 1
            for j in range(6):
                zz, yy, xx = z + dz[j], y + dy[j], x + dx[j]
                if zz < 0 or zz >= nz or yy < 0 or yy >= ny or xx < 0 or xx >= nx:
                    continue
                u = (zz * ny + yy) * nx + xx
                if foreground[u] and not queued[u]:
                    queued[u] = True
                    heapq.heappush(heap, (-weight[u], u))
    return psi, order

"""Find the spine: the spinal canal followed through the scan, the vertebral bodies in front of it.

The canal is the anchor: a dark hole inside a bony ring at every level, whatever the contrast phase
or slice thickness, and never in the heart or the vessels. Per working slice, holes of the right
size and darkness enclosed by bone (at a few thresholds, osteoporotic bone included) are
candidates; the canal is the longest smooth path through them (dynamic programming along the
spine), so an isolated hole elsewhere cannot pull the track off. The bodies lie directly in front of
the canal; past the canal's ends (the sacrum, a cut field of view) the track follows the thickest
bone.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from volbmd.errors import InputError
from volbmd.geometry import block_mean
from volbmd.segment.classical.options import CanalOptions, LocaliseOptions
from volbmd.segment.classical.types import CanalPath, SpacingZYX, SpineTrack, WorkGrid
from volbmd.slicewise import fill_holes_slicewise, label_stats, patient_mask, slice_holes
from volbmd.types import SpacingYX
from volbmd.volume import Volume

__all__ = ["working_grid", "bone_mask", "find_canal", "track_bodies", "lung_beside", "sacrum_at_bottom", "disk_footprint"]


def working_grid(canon: Volume, opts: LocaliseOptions) -> WorkGrid:
    """Block-average the canonical scan to the localisation grid and find the patient in it."""
    sz, sy, sx = canon.spacing_mm
    factors = (
        max(1, int(round(opts.work_slice_mm / sz))),
        max(1, int(round(opts.work_in_plane_mm / sy))),
        max(1, int(round(opts.work_in_plane_mm / sx))),
    )
    hu = block_mean(canon.array, factors)
    spacing = (sz * factors[0], sy * factors[1], sx * factors[2])
    patient = patient_mask(hu, opts.patient_hu)  # the patient, not the table
    if not patient.any():
        raise InputError(f"no patient in the scan (nothing above {opts.patient_hu:g} HU)", canon.source)
    xs = np.nonzero(patient)[2]
    return WorkGrid(hu, spacing, factors, patient, float(np.median(xs) + 0.5) * spacing[2])


def bone_mask(hu: np.ndarray, low: float, high: float) -> np.ndarray:
    """Voxels above ``low`` connected to voxels above ``high`` (cortex), holes filled per slice
    (the trabecular interior inside its cortical ring, even when osteoporotic)."""
    low_mask = hu > low
    lab, n = ndi.label(low_mask)
    if n == 0:
        return low_mask
    keep = np.zeros(n + 1, bool)
    keep[np.unique(lab[hu > high])] = True
    keep[0] = False
    return fill_holes_slicewise(keep[lab])


def disk_footprint(radius_mm: float, spacing_yx: SpacingYX) -> np.ndarray:
    sy, sx = spacing_yx
    ry, rx = max(1, int(np.ceil(radius_mm / sy))), max(1, int(np.ceil(radius_mm / sx)))
    yy, xx = np.mgrid[-ry : ry + 1, -rx : rx + 1]
    return (yy * sy) ** 2 + (xx * sx) ** 2 <= radius_mm**2 + 1e-6


def _canal_candidates(work: WorkGrid, opts: CanalOptions) -> list[list[tuple[float, float]]]:
    """Per working slice, canal-like holes (y, x) in mm: dark, of canal size, enclosed by bone,
    near the midline and behind the front of the patient."""
    sz, sy, sx = work.spacing_mm
    nz, ny, nx = work.hu.shape
    x0 = max(0, int((work.mid_x_mm - opts.midline_mm - 20.0) / sx))
    x1 = min(nx, int((work.mid_x_mm + opts.midline_mm + 20.0) / sx) + 1)
    smooth = ndi.gaussian_filter(work.hu[:, :, x0:x1], (0, opts.smooth_mm / sy, opts.smooth_mm / sx))
    disk = disk_footprint(opts.closing_mm, (sy, sx)) if opts.closing_mm > 0 else None
    pad = 0 if disk is None else max(disk.shape) // 2 + 1
    pixel_mm2 = sy * sx
    lo_area, hi_area = opts.area_mm2
    # the front of the patient, per slice: candidates lie behind anterior_fraction of its depth
    rows = work.patient[:, :, x0:x1].any(axis=2)
    first = np.where(rows.any(axis=1), rows.argmax(axis=1), 0)
    last = np.where(rows.any(axis=1), ny - 1 - rows[:, ::-1].argmax(axis=1), 0)
    y_min_mm = (first + opts.anterior_fraction * (last - first)) * sy
    out: list[list[tuple[float, float]]] = [[] for _ in range(nz)]
    for threshold in opts.ring_thresholds_hu:
        ring = smooth > threshold
        if not ring.any():
            continue
        if disk is not None:
            padded = np.pad(ring, ((0, 0), (pad, pad), (pad, pad)))
            ring = ndi.binary_closing(padded, disk[None])[:, pad:-pad, pad:-pad] | ring
        holes, n = slice_holes(ring)
        if n == 0:
            continue
        counts, centroid, mean_hu = label_stats(holes, n, smooth)
        area = counts * pixel_mm2
        index = np.flatnonzero((area >= lo_area) & (area <= hi_area))
        index = index[index > 0]
        if index.size == 0:
            continue
        mean, com = mean_hu[index], centroid[index]
        top = min(opts.max_content_hu, threshold - 40.0)
        for m, (cz, cy, cx) in zip(mean, com):
            k = int(round(cz))
            y_mm, x_mm = (cy + 0.5) * sy, (x0 + cx + 0.5) * sx
            if not (opts.min_content_hu <= m <= top) or abs(x_mm - work.mid_x_mm) > opts.midline_mm or y_mm < y_min_mm[k]:
                continue
            if all(np.hypot(y_mm - fy, x_mm - fx) > 4.0 for fy, fx in out[k]):
                out[k].append((y_mm, x_mm))
    return out


def _longest_path(
    cands: list[list[tuple[float, float]]], dz_mm: float, opts: CanalOptions
) -> list[tuple[int, float, float]]:
    """The best path (slice, y, x) through the candidates, bottom to top: each step earns the length
    it covers (up to ``reward_cap_mm``, less beyond it) and pays for in-plane movement; steps that
    move faster than the spine can curve are not allowed."""
    nodes = [(k, y, x) for k, cs in enumerate(cands) for (y, x) in cs]
    if not nodes:
        return []
    score = np.zeros(len(nodes))
    prev = np.full(len(nodes), -1)
    for i, (k, y, x) in enumerate(nodes):
        best, arg = min(dz_mm, opts.reward_cap_mm), -1
        for j in range(i - 1, -1, -1):
            kj, yj, xj = nodes[j]
            gap = (k - kj) * dz_mm
            if gap <= 0:
                continue
            if gap > opts.max_skip_mm:
                break
            move = float(np.hypot(y - yj, x - xj))
            if move > 4.0 + opts.max_slope * gap:
                continue
            s = (
                score[j]
                + min(gap, opts.reward_cap_mm)
                - opts.gap_penalty * max(0.0, gap - opts.reward_cap_mm)
                - opts.move_penalty * move
            )
            if s > best:
                best, arg = s, j
        score[i], prev[i] = best, arg
    i = int(np.argmax(score))
    path = []
    while i >= 0:
        path.append(nodes[i])
        i = int(prev[i])
    return path[::-1]


def find_canal(work: WorkGrid, opts: CanalOptions) -> CanalPath:
    """The spinal canal's centre per working slice (NaN outside the path and between its nodes)."""
    cands = _canal_candidates(work, opts)
    path = _longest_path(cands, work.spacing_mm[0], opts)
    yx = np.full((work.hu.shape[0], 2), np.nan)
    for k, y, x in path:
        yx[k] = (y, x)
    length = (path[-1][0] - path[0][0] + 1) * work.spacing_mm[0] if path else 0.0
    return CanalPath(yx, float(length))


def _running_median(values: np.ndarray, window: int, lo: float, hi: float, fallback: float) -> np.ndarray:
    ok = np.isfinite(values)
    if not ok.any():
        return np.full(values.shape, fallback)
    filled = np.interp(np.arange(values.size), np.flatnonzero(ok), values[ok])
    return np.clip(ndi.median_filter(filled, size=max(1, window) | 1, mode="nearest"), lo, hi)


def _body_runs(
    bone: np.ndarray, canal_yx: np.ndarray, ks: np.ndarray, spacing: SpacingZYX, opts: LocaliseOptions
) -> tuple[np.ndarray, np.ndarray]:
    """Per slice: distance (mm) from the canal centre to the body's posterior wall and to its
    anterior edge, along a narrow column in front of the canal (NaN where no body is seen). The
    body ends at a :func:`_waist` where the next or the previous slice has one too, within
    ``waist_agree_mm`` (a vessel lying on the body does so over many slices; the ragged bone mask
    of a single disc slice is no vessel)."""
    _, sy, sx = spacing
    post = np.full(len(ks), np.nan)
    ant = np.full(len(ks), np.nan)
    waist_mm = np.full(len(ks), np.nan)
    gap_px = max(1, int(round(opts.body_gap_mm / sy)))
    for j, k in enumerate(ks):
        cy, cx = canal_yx[j]
        i0, i1 = max(0, int((cx - 4.0) / sx)), min(bone.shape[2], int((cx + 4.0) / sx) + 1)
        jc = min(bone.shape[1] - 1, int(cy / sy))
        j_far = max(0, int((cy - opts.posterior_wall_max_mm - opts.body_depth_max_mm) / sy))
        if i1 <= i0 or jc <= j_far:
            continue
        col = bone[k, j_far : jc + 1, i0:i1].mean(axis=1) >= 0.5  # index 0 = most anterior
        col = col[::-1]  # from the canal forwards
        hits = np.flatnonzero(col)
        if hits.size == 0 or hits[0] * sy > opts.posterior_wall_max_mm:
            continue
        r = int(hits[0])
        run_end, misses = r, 0
        while r + 1 < col.size:
            r += 1
            if col[r]:
                run_end, misses = r, 0
            else:
                misses += 1
                if misses > gap_px:
                    break
        rows = jc - np.arange(int(hits[0]), run_end + 1)  # the run's rows of the slice, backwards to forwards
        waist = _waist(bone[k, rows], (i0, i1), (sy, sx), opts)
        post[j] = hits[0] * sy
        ant[j] = (run_end + 1) * sy
        if waist is not None:
            waist_mm[j] = (int(hits[0]) + waist) * sy
    step = np.abs(np.diff(waist_mm))  # NaN where either slice has no waist
    near = np.fmin(np.r_[np.inf, step], np.r_[step, np.inf])  # to the closer neighbour's waist
    agreed = near <= opts.waist_agree_mm
    ant[agreed] = waist_mm[agreed]
    return post, ant


def _run_width(row: np.ndarray, i0: int, i1: int) -> int:
    """Length (pixels) of the longest run of True in ``row`` that reaches into columns [i0, i1)."""
    padded = np.concatenate([[False], row, [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    starts, ends = edges[::2], edges[1::2]  # run k covers [starts[k], ends[k])
    touching = (starts < i1) & (ends > i0)
    return int((ends - starts)[touching].max()) if touching.any() else 0


def _waist(rows: np.ndarray, columns: tuple[int, int], spacing_yx: SpacingYX, opts: LocaliseOptions) -> int | None:
    """Where a bone run in front of the canal narrows to a waist and widens again: the row (index
    into ``rows``, backwards to forwards) at which the vertebral body ends and something joined to
    it in front begins, or None. Each row's width is its longest bone run reaching into the
    column (``columns``; median over three rows); a waist is a row at least ``waist_min_depth_mm``
    in front of the posterior wall (no body is shallower) narrower than ``waist_fraction`` of the
    widest row behind it, past which the run widens again to at least twice it and by
    ``waist_regrow_mm``, but not beyond the body's width (a body wider in front than behind is the
    body itself, its back hollowed by the basivertebral veins). An enhanced aorta lying on the
    body's front is as bright as bone: on a noise draw of a CTA (σ 25 HU) the fat between them
    vanished for 40 mm of the spine, the body's depth there read 44 mm instead of 28 and its centre
    moved 8 mm forwards — off the discs."""
    sy, sx = spacing_yx
    n = rows.shape[0]
    if n < 4:
        return None
    width = np.array([_run_width(row, *columns) * sx for row in rows])
    width = ndi.median_filter(width, size=3, mode="nearest")
    widest = np.maximum.accumulate(width)
    ahead = np.maximum.accumulate(width[::-1])[::-1]  # the widest row at or past each row
    for r in range(max(1, int(round(opts.waist_min_depth_mm / sy))), n - 1):
        narrow = width[r] < opts.waist_fraction * widest[r - 1]
        regrows = max(2.0 * width[r], width[r] + opts.waist_regrow_mm) <= ahead[r + 1] <= widest[r - 1]
        if narrow and regrows:
            return r
    return None


def _thickest_near(sl: np.ndarray, last_yx: np.ndarray, spacing_yx: SpacingYX, radius_mm: float, min_mm: float):
    """(y, x, thickness) of the thickest bone within ``radius_mm`` of ``last_yx`` (mm), or None."""
    sy, sx = spacing_yx
    pad = radius_mm + 20.0
    j0, j1 = max(0, int((last_yx[0] - pad) / sy)), min(sl.shape[0], int((last_yx[0] + pad) / sy) + 1)
    i0, i1 = max(0, int((last_yx[1] - pad) / sx)), min(sl.shape[1], int((last_yx[1] + pad) / sx) + 1)
    win = sl[j0:j1, i0:i1]
    if not win.any():
        return None
    d = ndi.distance_transform_edt(np.pad(win, 1), sampling=(sy, sx))[1:-1, 1:-1]
    yy = ((np.arange(j0, j1) + 0.5) * sy)[:, None]
    xx = ((np.arange(i0, i1) + 0.5) * sx)[None, :]
    d = np.where((yy - last_yx[0]) ** 2 + (xx - last_yx[1]) ** 2 <= radius_mm**2, d, 0.0)
    j, i = np.unravel_index(int(np.argmax(d)), d.shape)
    if d[j, i] < min_mm:
        return None
    return (j0 + j + 0.5) * sy, (i0 + i + 0.5) * sx, float(d[j, i])


def track_bodies(
    work: WorkGrid, bone: np.ndarray, canal: CanalPath, opts: LocaliseOptions, min_length_mm: float, source=None
) -> SpineTrack:
    """Body centres in front of the canal, extended past the canal's ends along the thickest bone."""
    sz, sy, sx = work.spacing_mm
    seen = np.flatnonzero(np.isfinite(canal.yx_mm[:, 0]))
    if seen.size < 2 or canal.length_mm < min_length_mm:
        raise InputError("no spine found: no spinal canal (a dark hole in a bony ring) runs through the scan", source)
    c0, c1 = int(seen[0]), int(seen[-1])
    ks = np.arange(c0, c1 + 1)
    canal_yx = np.column_stack([np.interp(ks, seen, canal.yx_mm[seen, c]) for c in range(2)])
    canal_yx = ndi.median_filter(canal_yx, size=(5, 1), mode="nearest")
    post, ant = _body_runs(bone, canal_yx, ks, work.spacing_mm, opts)
    window = int(round(opts.running_window_mm / sz))
    lo, hi = opts.half_depth_range_mm
    if np.isfinite(post).sum() < 2:
        raise InputError("no spine found: no vertebral body in front of the spinal canal", source)
    post_m = _running_median(post, window, 2.0, opts.posterior_wall_max_mm, 6.0)
    half = _running_median((ant - post) / 2.0, window, lo, hi, 12.0)
    body = canal_yx.copy()
    body[:, 0] = canal_yx[:, 0] - post_m - half
    # past the canal's ends: follow the thickest bone near the last body centre
    below, above = [], []
    for direction, store in ((-1, below), (1, above)):
        k = (c0 if direction < 0 else c1) + direction
        last = body[0] if direction < 0 else body[-1]
        gap = 0
        max_gap = max(1, int(round(opts.extend_max_gap_mm / sz)))
        while 0 <= k < bone.shape[0] and gap <= max_gap:
            hit = _thickest_near(bone[k], last, (sy, sx), opts.extend_radius_mm, opts.extend_min_thickness_mm)
            if hit is None:
                gap += 1
            else:
                last = np.array(hit[:2])
                store.append((k, last))
                gap = 0
            k += direction
    n_below = below[-1][0] if below else c0
    n_above = above[-1][0] if above else c1
    k0, k1 = min(n_below, c0), max(n_above, c1)
    all_k = np.arange(k0, k1 + 1)
    known_k = np.concatenate([[k for k, _ in below][::-1], ks, [k for k, _ in above]]).astype(int)
    known_body = np.concatenate(
        [np.array([p for _, p in below][::-1]).reshape(-1, 2), body, np.array([p for _, p in above]).reshape(-1, 2)]
    )
    body_all = np.column_stack([np.interp(all_k, known_k, known_body[:, c]) for c in range(2)])
    offset = canal_yx - body
    canal_all = body_all + np.column_stack([np.interp(all_k, ks, offset[:, c]) for c in range(2)])
    half_all = np.interp(all_k, ks, half)
    return SpineTrack(int(k0), int(k1), (all_k + 0.5) * sz, body_all, canal_all, half_all, (int(c0 - k0), int(c1 - k0)))


def lung_beside(
    hu: np.ndarray, spacing: SpacingZYX, z_mm: tuple[float, float], body_yx_mm: np.ndarray, opts: LocaliseOptions
) -> float:
    """The share of air (below ``lung_hu``) beside a vertebral body over the heights ``z_mm``:
    ``lung_lateral_mm`` to either side of the body's centre ``body_yx_mm``, within ``lung_ap_mm`` of
    it front and back. The lungs fill that space beside the thoracic vertebrae (0.45–0.9 from T2 to
    T11 on the development CTs); beside C7 and the sacrum lie soft tissue and bone (0.00), beside
    T1, T12 and L1 the lungs' tips (0.0–0.4)."""
    sz, sy, sx = spacing
    cy, cx = body_yx_mm
    dy = (np.arange(hu.shape[1]) + 0.5) * sy - cy
    dx = (np.arange(hu.shape[2]) + 0.5) * sx - cx
    lo, hi = opts.lung_lateral_mm
    box = (np.abs(dy)[:, None] <= opts.lung_ap_mm) & ((np.abs(dx) >= lo) & (np.abs(dx) <= hi))[None, :]
    k0 = max(0, int(np.floor(z_mm[0] / sz)))
    k1 = min(hu.shape[0], max(k0 + 1, int(np.ceil(z_mm[1] / sz))))
    if not box.any() or k0 >= hu.shape[0]:
        return 0.0
    return float((hu[k0:k1][:, box] < opts.lung_hu).mean())


def sacrum_at_bottom(
    bone: np.ndarray, hu: np.ndarray, track: SpineTrack, spacing: SpacingZYX, opts: LocaliseOptions
) -> bool:
    """True when, at the bottom of the track, the bone under the body widens into the pelvis
    (sacrum and iliac bones in one blob wider than ``pelvis_width_mm``, holding cortical bone —
    a 90th percentile of at least ``pelvis_bone_hu`` — beyond ``pelvis_lateral_mm`` of the body's
    centre): the lowest vertebra is S1. An enhanced liver and kidneys joined to a lumbar vertebra
    by its vessels make a blob as wide but no denser than 210 HU there (a contrast CT cut at L3 was
    named from a sacrum, confidence 0.95), the iliac bones 340–480 HU. Ribs joined to a thoracic
    vertebra make a wide, dense blob too: ask :func:`lung_beside` first."""
    sz, sy, sx = spacing
    cy, cx = track.body_yx_mm[0]
    k0 = track.k0
    lo = max(0, k0 - int(round(15.0 / sz)))
    hi = min(bone.shape[0], k0 + int(round(10.0 / sz)) + 1)
    lateral = np.abs((np.arange(bone.shape[2]) + 0.5) * sx - cx)[None, :] > opts.pelvis_lateral_mm
    for k in range(lo, hi):
        pts = np.argwhere(bone[k])
        if pts.size == 0:
            continue
        d = np.hypot((pts[:, 0] + 0.5) * sy - cy, (pts[:, 1] + 0.5) * sx - cx)
        j = int(np.argmin(d))
        if d[j] > 12.0:
            continue
        lab, _ = ndi.label(bone[k])
        blob = lab == lab[tuple(pts[j])]
        cols = np.flatnonzero(blob.any(axis=0))
        if (cols[-1] - cols[0] + 1) * sx < opts.pelvis_width_mm:
            continue
        far = hu[k][blob & lateral]
        if far.size and float(np.percentile(far, 90)) >= opts.pelvis_bone_hu:
            return True
    return False

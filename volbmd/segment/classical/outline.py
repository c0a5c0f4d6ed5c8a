"""The bone of the vertebrae at full resolution, before it is split between them.

Bone above a low threshold connected to cortex, the body's marrow filled in (however dark), the
canal and dark holes behind the body left open; body rings with small gaps closed; contrast-filled
vessels beside the spine removed; each disc carved out between its endplates; and, after the
split, dark marrow enclosed by a vertebra in sagittal or coronal slices given back to it.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from volbmd.segment.classical.discs import plane_basis
from volbmd.segment.classical.localise import disk_footprint
from volbmd.segment.classical.options import OutlineOptions
from volbmd.segment.classical.types import SpacingZYX
from volbmd.slicewise import slice_holes
from volbmd.types import SpacingYX

__all__ = ["bone_with_holes", "close_body_rings", "enhanced_vessels", "carve_disc", "fill_enclosed_marrow"]


def bone_with_holes(arr: np.ndarray, low: float, high: float, keep_holes) -> tuple[np.ndarray, np.ndarray]:
    """Bone above ``low`` connected to bone above ``high``, every enclosed hole of each axial slice
    filled; ``keep_holes(holes, n)`` judges the holes (labels 1..n, one per hole and slice) and
    returns for each label whether it is marrow (True); the holes it rejects come back separately
    (the spinal canal, ringed by the arch, is not bone but joins the arch to the body).
    Returns (bone, rejected_holes)."""
    low_mask = arr > low
    lab, n = ndi.label(low_mask)
    if n == 0:
        return low_mask, np.zeros(arr.shape, bool)
    keep = np.zeros(n + 1, bool)
    keep[np.unique(lab[arr > high])] = True
    keep[0] = False
    bone = keep[lab]
    holes, n_holes = slice_holes(bone)
    if n_holes == 0:
        return bone, np.zeros(arr.shape, bool)
    marrow = np.asarray(keep_holes(holes, n_holes), bool)
    marrow[0] = True
    rejected = ~marrow[holes]
    return bone | (holes > 0), rejected


def close_body_rings(
    bone: np.ndarray,
    track_y: np.ndarray,
    track_x: np.ndarray,
    yy_mm: np.ndarray,
    xx_mm: np.ndarray,
    spacing_yx: SpacingYX,
    half_depth_mm: float,
    gap_mm: float,
) -> None:
    """Fill the body's interior, in place, where its cortical ring has gaps up to ``gap_mm`` wide
    (thin or osteoporotic cortex at partial volume): holes that appear after a closing, centred in
    the body. ``yy_mm``/``xx_mm`` are the crop's voxel centres."""
    if gap_mm <= 0:
        return
    sy, sx = spacing_yx
    disk = disk_footprint(gap_mm, spacing_yx)
    pad = (disk.shape[0] // 2 + 1, disk.shape[1] // 2 + 1)
    reach = 2.5 * half_depth_mm  # a window around the body is enough
    for k in range(bone.shape[0]):
        j0 = int(np.searchsorted(yy_mm, track_y[k] - reach))
        j1 = max(j0, int(np.searchsorted(yy_mm, track_y[k] + reach)))
        i0 = int(np.searchsorted(xx_mm, track_x[k] - reach))
        i1 = max(i0, int(np.searchsorted(xx_mm, track_x[k] + reach)))
        win = bone[k, j0:j1, i0:i1]
        if not win.any():
            continue
        sl = np.pad(win, ((pad[0], pad[0]), (pad[1], pad[1])))
        closed = ndi.binary_closing(sl, disk)[pad[0] : -pad[0], pad[1] : -pad[1]]
        holes, _ = ndi.label(ndi.binary_fill_holes(closed) & ~closed)
        for h, box in enumerate(ndi.find_objects(holes), start=1):
            region = holes[box] == h
            j, i = np.nonzero(region)
            cy = yy_mm[j0 + box[0].start + int(round(j.mean()))]
            cx = xx_mm[i0 + box[1].start + int(round(i.mean()))]
            if abs(cy - track_y[k]) <= 0.5 * half_depth_mm and abs(cx - track_x[k]) <= half_depth_mm:
                win[box] |= region


def enhanced_vessels(
    crop: np.ndarray, spacing: SpacingZYX, yy_mm, xx_mm, track_y, track_x, half_depth_mm: float, opts: OutlineOptions
) -> np.ndarray:
    """Contrast-filled vessels beside the spine (aorta, vena cava, iliac vessels): bright like bone
    but homogeneous. Components of voxels whose neighbourhood (``vessel_window_mm``) averages above
    ``vessel_min_hu`` with an SD under ``vessel_max_sd_hu`` (or ``vessel_noise_factor`` times the
    scan's own noise, the SD of muscle in the same window, in a noisy scan; well in front of the body
    ``vessel_front_noise_factor`` times it, or that noise and ``vessel_front_texture_hu`` added in
    quadrature), at least ``vessel_min_volume_mm3``,
    outside the body's core and centred in front of its posterior wall, widened by the
    window (their wall and partial-volume rim) where not brighter than the blood. Without
    contrast, blood is far below the bone threshold and nothing is found."""
    size = tuple(max(1, 2 * int(round(opts.vessel_window_mm / 2 / s)) + 1) for s in spacing)
    a = crop.astype(np.float32)
    mean = ndi.uniform_filter(a, size)
    var = ndi.uniform_filter(a * a, size) - mean * mean
    muscle = (mean > 20.0) & (mean < 80.0)
    max_sd = front_max_sd = opts.vessel_max_sd_hu
    if muscle.sum() >= 1000:
        noise_sd = float(np.sqrt(max(np.median(var[muscle]), 0.0)))
        max_sd = max(max_sd, opts.vessel_noise_factor * noise_sd)
        front_max_sd = max(
            max_sd,
            opts.vessel_front_noise_factor * noise_sd,
            float(np.hypot(noise_sd, opts.vessel_front_texture_hu)),
        )
    # the body's own marrow (bright and smooth in a noisy contrast scan) is never a vessel
    core = (
        np.hypot(
            np.asarray(yy_mm)[None, :, None] - track_y[:, None, None],
            np.asarray(xx_mm)[None, None, :] - track_x[:, None, None],
        )
        <= half_depth_mm
    )
    # in front of the body (the aorta against a thoracolumbar body) a vessel may be less homogeneous:
    # contrast still mixing, a calcified wall; there the SD may reach vessel_front_noise_factor × noise
    dy = np.asarray(yy_mm)[None, :, None] - track_y[:, None, None]
    sd_limit = np.where(dy < -opts.vessel_front_share * half_depth_mm, front_max_sd, max_sd)
    cand = (mean > opts.vessel_min_hu) & (var < sd_limit**2) & (a > opts.vessel_min_hu - 20.0) & ~core
    out = np.zeros(crop.shape, bool)
    lab, n = ndi.label(cand)
    if n == 0:
        return out
    voxel = float(np.prod(spacing))
    counts = np.bincount(lab.ravel())
    keep = np.zeros(n + 1, bool)
    objects = ndi.find_objects(lab)
    for i in np.flatnonzero(counts * voxel >= opts.vessel_min_volume_mm3):
        if i == 0:
            continue
        box = objects[i - 1]
        region = lab[box] == i
        k, j, m = np.nonzero(region)
        ks = k + box[0].start
        dy = np.asarray(yy_mm)[j + box[1].start] - track_y[ks]
        dx = np.asarray(xx_mm)[m + box[2].start] - track_x[ks]
        in_core = np.count_nonzero(np.hypot(dy, dx) <= 0.8 * half_depth_mm)
        keep[i] = in_core < 0.2 * k.size and float(np.mean(dy)) < 0.5 * half_depth_mm
    if keep.any():
        # the wall and partial-volume rim, as wide as the window, unless brighter than the blood
        # (cortex where the vessel lies against the vertebra)
        blood_hu = float(np.max(ndi.mean(a, lab, np.flatnonzero(keep))))
        out = ndi.binary_dilation(keep[lab], np.ones(size, bool)) & (a < 1.25 * blood_hu) & ~core
    return out


def carve_disc(bone, crop, signed, zz, yy, xx, point, normal, half_depth_mm: float, opts: OutlineOptions) -> None:
    """Remove the disc between two endplates from ``bone`` (in place).

    ``signed`` is the signed distance (mm) of each voxel from the disc plane; ``zz``, ``yy``, ``xx``
    the voxel centres (broadcastable). Degenerate or thin discs seen in thick slices can be as
    bright as bone. Along the disc's normal, the mean HU across the body has a trough (the disc)
    between two endplate peaks; the disc is the part of the trough below the half-way level on each
    side, within the body (not behind its posterior wall, where the facet joints are). Nothing is
    carved where that stretch is wider than ``carve_max_thickness`` times the body's half depth."""
    reach_mm = opts.carve_reach_mm
    ks = np.flatnonzero(np.abs(zz - point[0]) <= reach_mm + 2.5 * half_depth_mm)
    if ks.size == 0:
        return
    sub = slice(ks[0], ks[-1] + 1)
    sd = signed[sub]
    dy = np.broadcast_to(yy - point[1], sd.shape)
    d2 = (zz[sub, None, None] - point[0]) ** 2 + (yy - point[1]) ** 2 + (xx - point[2]) ** 2 - sd**2
    body = (d2 <= (1.8 * half_depth_mm) ** 2) & (dy <= half_depth_mm) & (np.abs(sd) <= reach_mm)
    if not body.any():
        return
    c = int(reach_mm)
    hbin = np.round(sd[body]).astype(np.int64) + c
    counts = np.bincount(hbin, minlength=2 * c + 1)
    sums = np.bincount(hbin, weights=crop[sub][body].astype(np.float64), minlength=2 * c + 1)
    if (counts == 0).any():
        return
    prof = ndi.gaussian_filter1d(sums / counts, 1.0)
    trough = c - 2 + int(np.argmin(prof[c - 2 : c + 3]))  # at the least-bone plane, not in a dark marrow cavity beside it
    lo_peak = int(np.argmax(prof[: trough + 1]))
    hi_peak = trough + int(np.argmax(prof[trough:]))
    if min(prof[lo_peak], prof[hi_peak]) - prof[trough] < opts.carve_min_contrast_hu:
        return
    if min(prof[lo_peak], prof[hi_peak]) < opts.carve_min_endplate_hu:
        return
    lo_half = 0.5 * (prof[trough] + prof[lo_peak])
    hi_half = 0.5 * (prof[trough] + prof[hi_peak])
    lo = trough
    while lo > lo_peak and prof[lo - 1] < lo_half:
        lo -= 1
    hi = trough
    while hi < hi_peak and prof[hi + 1] < hi_half:
        hi += 1
    lo_mm, hi_mm = lo - c - 0.5, hi - c + 0.5
    if hi_mm - lo_mm > opts.carve_max_thickness * half_depth_mm:
        # wider than a disc of a body this size: the trough is a body's marrow between two discs
        # (blurred thick slices), and carving it would take the whole body away
        return
    # endplates are seldom parallel (wedged discs): each tile of the disc moves the slab along the
    # normal, up to carve_max_shift_mm, to where it is darkest
    e1, e2 = plane_basis(np.asarray(normal, float))
    rel = [zz[sub, None, None] - point[0], yy - point[1], xx - point[2]]
    u = rel[0] * e1[0] + rel[1] * e1[1] + rel[2] * e1[2]
    v = rel[0] * e2[0] + rel[1] * e2[1] + rel[2] * e2[2]
    tile_mm = opts.carve_tile_mm
    tu = np.floor(np.broadcast_to(u, sd.shape)[body] / tile_mm).astype(np.int64)
    tv = np.floor(np.broadcast_to(v, sd.shape)[body] / tile_mm).astype(np.int64)
    tile = (tu - tu.min()) * (tv.max() - tv.min() + 1) + (tv - tv.min())
    h = sd[body]
    hu = crop[sub][body].astype(np.float64)
    shifts = np.arange(-opts.carve_max_shift_mm, opts.carve_max_shift_mm + 1e-9, 1.0)
    means = np.full((len(shifts), tile.max() + 1), np.inf)
    for i, d in enumerate(shifts):
        inside = (h >= lo_mm + d) & (h <= hi_mm + d)
        n = np.bincount(tile[inside], minlength=tile.max() + 1)
        tot = np.bincount(tile[inside], weights=hu[inside], minlength=tile.max() + 1)
        ok = n >= 3
        means[i, ok] = tot[ok] / n[ok] + 1e-3 * abs(d)
    best = np.where(np.isfinite(means).any(axis=0), shifts[np.argmin(means, axis=0)], 0.0)
    shift = best[tile]
    # marrow darker than the disc (fatty, osteoporotic) is a body's, never the disc's
    carve = (h >= lo_mm + shift) & (h <= hi_mm + shift) & (hu >= prof[trough] - opts.carve_marrow_margin_hu)
    where = np.nonzero(body)
    bone[sub][tuple(w[carve] for w in where)] = False


def fill_enclosed_marrow(labels: np.ndarray) -> None:
    """Give each vertebra, in place, the unlabelled voxels it encloses in a sagittal or coronal
    slice: dark marrow walled in by cortex and endplates whose axial ring stays open (a vein's
    foramen). The spinal canal is never enclosed in these slices (it runs on to the next level)."""
    for vid, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        sub = labels[box]
        own = sub == vid
        filled = np.zeros_like(own)
        for i in range(own.shape[2]):
            if own[:, :, i].any():
                filled[:, :, i] = ndi.binary_fill_holes(own[:, :, i])
        for j in range(own.shape[1]):
            if own[:, j, :].any():
                filled[:, j, :] |= ndi.binary_fill_holes(own[:, j, :])
        sub[filled & (sub == 0)] = vid

"""Classical vertebra segmentation and level labelling for CT: no weights, no training.

Steps, in the canonical LPS frame (axis 0 inferior → superior, 1 anterior → posterior, 2 right → left):

1. Bone: voxels above ``bone_low_hu`` connected to voxels above ``bone_high_hu`` (cortex), holes
   filled per axial slice (osteoporotic trabecular bone inside its cortical ring is kept).
2. Spine track (≈2 mm working grid): in each slice the vertebral body is the thick bone blob near
   the patient's midline, followed slice to slice from the thickest; into the sacrum it follows the
   thickest bone. The body centre is its anterior edge plus its half depth (the thickest point
   drifts to the pedicles where the body is tilted); a smoothed centre line joins the centres.
3. Discs: deep minima of the bone fraction of disks normal to the centre line, plus bright
   (degenerate) discs seen as mean-HU troughs between two endplates; each disc plane is then tilted
   and shifted to the least bone (the lumbosacral disc lies at up to 45°).
4. Vertebrae, at full resolution: contrast-filled vessels beside the spine are removed; each disc
   is carved out between its endplates; the body cores between the disc planes seed a geodesic
   growth through bone (Numba kernel, dim voxels such as joint spaces cost more, climbing costs
   more: articular and spinous processes hang down from their own vertebra), which hands each
   arch to the body its pedicles join. Ribs and iliac bones are seeded too, so growth stops where
   they meet; the spinal canal and dark holes behind the body are cleared.
5. Levels: from the sacrum (the track ends in a wide pelvic blob) and from the last rib-bearing
   vertebra (ribs come within reach of it). Six or four rib-free vertebrae above the sacrum give
   ``transitional:L6`` / ``transitional:4_lumbar`` flags when the rib evidence is strong; a field
   of view without either landmark gets provisional names and a flag.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi
from scipy.signal import find_peaks

from volbmd.errors import InputError
from volbmd_kernels.geodesic import geodesic_grow
from volbmd.geometry import block_mean, canonicalize, uncanonicalize
from volbmd.labels import level_rank, load_label_scheme
from volbmd.volume import LabelMap, Volume

__all__ = ["ClassicalSegmenter", "SpineSegments", "segment_spine"]

_WORK_MM = 2.0  # working grid for localisation
_FOREIGN = 2**30  # growth label of ribs and iliac bones


@dataclass
class Segment:
    z_lo_mm: float
    z_hi_mm: float
    rib_contact_mm3: float = 0.0  # vertebra within reach of ribs (not the pelvis), both sides
    rib_sides: list[str] = field(default_factory=list)  # "right"/"left" sides with a rib contact
    rib_beside_mm3: float = 0.0  # rib-like bone beside the vertebra's slab, touching it or not
    blob_area_mm2: float = 0.0
    blob_width_mm: float = 0.0
    level: str | None = None


@dataclass
class SpineSegments:
    track_z_mm: np.ndarray
    track_yx_mm: np.ndarray
    discs_z_mm: list[float]
    segments: list[Segment]
    flags: list[str] = field(default_factory=list)
    sacrum_at_bottom: bool = False
    disc_planes: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (point, normal) mm, zyx
    body_half_depth_mm: float = 15.0


def _bone(arr: np.ndarray, low: float, high: float, keep_hole=None) -> np.ndarray:
    """Bone above ``low`` connected to bone above ``high``, with holes filled per axial slice (the
    trabecular interior inside its cortical ring, even when osteoporotic).

    ``keep_hole(k, slices, hole_mask, hole_hu) -> bool``, when given, judges each enclosed hole of
    slice ``k``; all holes are filled, and ``(bone, rejected_holes)`` is returned (the spinal canal,
    ringed by the arch, is not bone but joins the arch to the body)."""
    low_mask = arr > low
    lab, n = ndi.label(low_mask)
    if n == 0:
        return low_mask if keep_hole is None else (low_mask, np.zeros_like(low_mask))
    keep = np.zeros(n + 1, bool)
    keep[np.unique(lab[arr > high])] = True
    keep[0] = False
    bone = keep[lab]
    rejected = np.zeros_like(bone) if keep_hole is not None else None
    for k in range(bone.shape[0]):
        if not bone[k].any():
            continue
        filled = ndi.binary_fill_holes(bone[k])
        if keep_hole is None:
            bone[k] = filled
            continue
        holes, nh = ndi.label(filled & ~bone[k])
        bone[k] = filled
        for h, obj in enumerate(ndi.find_objects(holes), start=1):
            region = holes[obj] == h
            if not keep_hole(k, obj, region, arr[k][obj][region]):
                rejected[k][obj] |= region
    return bone if keep_hole is None else (bone, rejected)


def _track(bone: np.ndarray, spacing: tuple[float, float, float], mid_x_mm: float,
           patient: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per working slice: body centre (y, x) in mm (NaN where none), thickness (mm), blob area (mm²).

    Candidates lie within 45 mm of the patient's midline and in the posterior half of the patient
    (enhanced vessels and the heart in front of the spine do not qualify).
    """
    sz, sy, sx = spacing
    nz = bone.shape[0]
    cand: list[list[tuple[float, float, float, float, float]]] = []
    for k in range(nz):
        found = []
        sl = bone[k]
        rows = np.flatnonzero(patient[k].any(axis=1))
        y_half = (rows[0] + 0.5 * (rows[-1] - rows[0])) * sy if rows.size else 0.0
        if sl.any():
            lab, n = ndi.label(sl)
            for b, obj in enumerate(ndi.find_objects(lab), start=1):
                blob = lab[obj] == b
                area = blob.sum() * sy * sx
                if area < 100 or area > 12000:
                    continue
                d = ndi.distance_transform_edt(np.pad(blob, 1), sampling=(sy, sx))[1:-1, 1:-1]
                j = np.unravel_index(int(np.argmax(d)), d.shape)
                cy, cx = (obj[0].start + j[0]) * sy, (obj[1].start + j[1]) * sx
                inside = patient[k, min(int(cy / sy), patient.shape[1] - 1), min(int(cx / sx), patient.shape[2] - 1)]
                if abs(cx - mid_x_mm) > 45 or cy < y_half or not inside:
                    continue
                width = (obj[1].stop - obj[1].start) * sx
                found.append((cy, cx, float(d.max()), area, width))
        cand.append(found)
    centre = np.full((nz, 2), np.nan)
    thick = np.zeros(nz)
    area = np.zeros(nz)
    width = np.zeros(nz)
    best = [(max(c, key=lambda t: t[2]) if c else None) for c in cand]
    scores = np.array([b[2] if b else 0.0 for b in best])
    if scores.max() < 4.0:
        return centre, thick, area
    seed = int(np.argmax(scores))
    centre[seed] = best[seed][:2]
    thick[seed], area[seed], width[seed] = best[seed][2], best[seed][3], best[seed][4]
    max_gap = max(2, int(round(25.0 / sz)))
    for direction in (1, -1):
        last = np.array(best[seed][:2])
        recent = [best[seed][2]]  # thicknesses of the last accepted centres
        gap = 0
        k = seed + direction
        while 0 <= k < nz and gap <= max_gap:
            # a blob much thinner than the bodies just followed (an osteophyte or rim at a disc)
            # does not carry the track
            min_thick = max(3.0, 0.4 * float(np.median(recent[-10:])))
            # the body centre may move further between distant slices (thick slices, gaps)
            reach = 15.0 + 0.5 * sz * (gap + 1)
            near = [c for c in cand[k] if np.hypot(c[0] - last[0], c[1] - last[1]) <= reach and c[2] >= min_thick]
            if not near and direction == -1:
                # the sacrum merges with the iliac bones into one wide blob: follow the thickest
                # bone near the last centre instead of whole blobs
                local = _local_thickest(bone[k], last, spacing)
                near = [local] if local is not None else []
            if near:
                c = min(near, key=lambda t: np.hypot(t[0] - last[0], t[1] - last[1]))  # the nearest: an arch is never nearer than the body
                centre[k] = c[:2]
                thick[k], area[k], width[k] = c[2], c[3], c[4]
                last = np.array(c[:2])
                recent.append(c[2])
                gap = 0
            else:
                gap += 1
            k += direction
    return centre, thick, np.stack([area, width], axis=1)


def _local_thickest(sl: np.ndarray, last: np.ndarray, spacing, radius_mm: float = 15.0):
    """(y, x, thickness, area, width) of the thickest bone within ``radius_mm`` of ``last`` (mm),
    or None when that bone is thinner than 3 mm."""
    _, sy, sx = spacing
    pad = radius_mm + 20.0
    j0, j1 = max(0, int((last[0] - pad) / sy)), min(sl.shape[0], int((last[0] + pad) / sy) + 1)
    i0, i1 = max(0, int((last[1] - pad) / sx)), min(sl.shape[1], int((last[1] + pad) / sx) + 1)
    win = sl[j0:j1, i0:i1]
    if not win.any():
        return None
    d = ndi.distance_transform_edt(np.pad(win, 1), sampling=(sy, sx))[1:-1, 1:-1]
    yy = ((np.arange(j0, j1)) * sy)[:, None]
    xx = ((np.arange(i0, i1)) * sx)[None, :]
    d = np.where((yy - last[0]) ** 2 + (xx - last[1]) ** 2 <= radius_mm**2, d, 0.0)
    j, i = np.unravel_index(int(np.argmax(d)), d.shape)
    if d[j, i] < 3.0:
        return None
    return ((j0 + j) * sy, (i0 + i) * sx, float(d[j, i]), 0.0, 0.0)


def _sacral_merge(bone: np.ndarray, centre: np.ndarray, k0: int, spacing) -> bool:
    """True when, at the bottom of the track, the bone under the body widens into the pelvis
    (sacrum and iliac bones in one blob wider than 140 mm): the lowest segment is then S1."""
    sz, sy, sx = spacing
    cy, cx = centre[k0]
    lo = max(0, k0 - int(round(15.0 / sz)))
    hi = min(bone.shape[0], k0 + int(round(10.0 / sz)) + 1)
    for k in range(lo, hi):
        pts = np.argwhere(bone[k])
        if pts.size == 0:
            continue
        d = np.hypot(pts[:, 0] * sy - cy, pts[:, 1] * sx - cx)
        j = int(np.argmin(d))
        if d[j] > 12.0:
            continue
        lab, _ = ndi.label(bone[k])
        blob = lab == lab[tuple(pts[j])]
        cols = np.flatnonzero(blob.any(axis=0))
        if (cols[-1] - cols[0] + 1) * sx >= 140.0:
            return True
    return False


@dataclass
class CentreLine:
    """The spine's centre line resampled by arc length: points (z, y, x) mm and unit tangents."""

    points_mm: np.ndarray
    tangents: np.ndarray
    step_mm: float


def _centre_line(track_z_mm: np.ndarray, track_yx_mm: np.ndarray, step_mm: float = 1.0,
                 smooth_mm: float = 8.0) -> CentreLine:
    pts = np.column_stack([track_z_mm, track_yx_mm])
    dz = float(np.median(np.diff(track_z_mm))) if len(track_z_mm) > 1 else 1.0
    pts = ndi.gaussian_filter1d(pts, sigma=max(0.5, smooth_mm / dz), axis=0, mode="nearest")
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    grid = np.arange(0.0, s[-1] + 1e-9, step_mm)
    out = np.column_stack([np.interp(grid, s, pts[:, c]) for c in range(3)])
    tan = np.gradient(out, axis=0)
    tan /= np.maximum(np.linalg.norm(tan, axis=1, keepdims=True), 1e-9)
    return CentreLine(out, tan, step_mm)


def _plane_basis(normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors spanning the plane normal to ``normal`` (z, y, x; or rows of an (N, 3)
    array): the first is the patient's left-right direction projected on the plane."""
    e1 = np.array([0.0, 0.0, 1.0]) - normal * normal[..., 2:3]
    e1 = e1 / np.linalg.norm(e1, axis=-1, keepdims=True)
    e2 = np.cross(normal, e1)
    return e1, e2


def _disk_offsets(radius_mm: float, step_mm: float = 1.0) -> np.ndarray:
    g = np.arange(-radius_mm, radius_mm + 1e-9, step_mm)
    u, v = np.meshgrid(g, g, indexing="ij")
    keep = u**2 + v**2 <= radius_mm**2
    return np.column_stack([u[keep], v[keep]])


def _anterior_centre_y(bone: np.ndarray, ks: np.ndarray, centres: np.ndarray, depth_mm: float,
                       spacing) -> np.ndarray:
    """Body centre y (mm) per slice: the body's anterior edge (the front of the bone run that reaches
    the tracked point, within 6 mm of its x) plus the body's half depth. The thickest point of an
    axial section drifts towards the pedicles where the body is tilted; the anterior edge does not.
    Slices without an edge (discs) are interpolated; with no edge at all the input is returned."""
    sz, sy, sx = spacing
    ant = np.full(len(ks), np.nan)
    for j, k in enumerate(ks):
        ty, tx = centres[j]
        i0, i1 = max(0, int((tx - 6) / sx)), min(bone.shape[2], int((tx + 6) / sx) + 1)
        j0, j1 = max(0, int((ty - 3 * depth_mm) / sy)), min(bone.shape[1], int(ty / sy) + 1)
        col = bone[k, j0:j1, i0:i1].any(axis=1)
        if col.size == 0 or not col[-1]:
            continue
        r = col.size - 1
        while r > 0 and col[r - 1]:
            r -= 1
        ant[j] = (j0 + r) * sy
    ok = np.isfinite(ant)
    if ok.sum() < 3:
        return centres[:, 0]
    y = np.interp(np.arange(len(ks)), np.flatnonzero(ok), ant[ok]) + depth_mm
    return ndi.median_filter(y, size=5, mode="nearest")


def _find_discs(bone: np.ndarray, spacing, line: CentreLine, radius_mm: float, hu: np.ndarray | None = None,
                min_gap_mm: float = 14.0, max_disc_bone: float = 0.45, endplate_reach_mm: float = 8.0,
                min_trough_hu: float = 80.0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Intervertebral discs as (point, unit normal) in mm (z, y, x), bottom to top.

    The bone fraction of a disk across the spine, normal to the centre line, is sampled every
    ``line.step_mm``; discs are its deep minima. Each disc's plane is then tilted and shifted to the
    position with the least bone (lumbosacral and lordotic discs are oblique to the line)."""
    offsets = _disk_offsets(radius_mm)
    prof = _disks_along(bone, spacing, line, offsets, empty=0.0)
    prof = ndi.gaussian_filter1d(prof, sigma=max(0.5, 1.5 / line.step_mm))
    gap = max(1, int(round(min_gap_mm / line.step_mm)))
    minima, _ = find_peaks(-prof, distance=gap, prominence=0.3)
    found = [int(m) for m in minima if prof[m] <= max_disc_bone]
    if hu is not None:
        # bright (degenerate, partial-volume) discs fill in as bone; they still show as a trough
        # of mean HU between two endplate peaks within a few mm either side
        mean_hu = _disks_along(hu, spacing, line, offsets, empty=np.nan)
        w = max(1, int(round(endplate_reach_mm / line.step_mm)))
        before = ndi.maximum_filter1d(mean_hu, w + 1, origin=w // 2, mode="nearest")
        after = ndi.maximum_filter1d(mean_hu, w + 1, origin=-(w // 2), mode="nearest")
        score = np.minimum(before, after) - mean_hu
        peaks, _ = find_peaks(score, height=min_trough_hu, distance=gap)
        for m in peaks:
            if all(abs(int(m) - f) >= gap for f in found):
                found.append(int(m))
    discs = []
    coarse = _disk_offsets(radius_mm, step_mm=2.0)  # the working grid is ≈2 mm: enough to score planes
    for m in sorted(found):
        discs.append(_refine_disc(bone, spacing, line.points_mm[m], line.tangents[m], coarse))
    return discs


def _disks_along(arr: np.ndarray, spacing, line: CentreLine, offsets: np.ndarray, empty: float) -> np.ndarray:
    """Per centre-line point, the mean of ``arr`` (nearest working voxel) over the disk normal to
    the line. Points outside the grid count as ``empty`` (0 for a mask: no bone), or are left out
    when ``empty`` is NaN."""
    e1, e2 = _plane_basis(line.tangents)
    pts = (line.points_mm[:, None, :] + offsets[None, :, :1] * e1[:, None, :]
           + offsets[None, :, 1:] * e2[:, None, :])  # (N, P, 3)
    idx = np.floor(pts / np.asarray(spacing)).astype(np.int64)
    ok = np.all((idx >= 0) & (idx < np.asarray(arr.shape)), axis=2)
    idx = np.where(ok[..., None], idx, 0)
    vals = arr[idx[..., 0], idx[..., 1], idx[..., 2]].astype(np.float64)
    if np.isnan(empty):
        n = ok.sum(axis=1)
        return np.where(n > 0, np.where(ok, vals, 0.0).sum(axis=1) / np.maximum(n, 1), np.nan)
    return np.where(ok, vals, empty).mean(axis=1)


def _refine_disc(bone, spacing, point, normal, offsets, max_tilt_deg: float = 30.0,
                 max_shift_mm: float = 6.0):
    """The plane near (point, normal) with the least bone on its disk: sagittal tilt up to
    ``max_tilt_deg``, coronal tilt up to a third of that, shift along the normal up to
    ``max_shift_mm``. The disc is a slab, so each plane is scored by the bone on it and on planes
    2 mm either side. Ties keep the smaller change."""
    e1, e2 = _plane_basis(normal)
    a = np.deg2rad(np.arange(-max_tilt_deg, max_tilt_deg + 1e-9, 5.0))[:, None]
    b = np.deg2rad(np.arange(-max_tilt_deg / 3, max_tilt_deg / 3 + 1e-9, 5.0))[None, :]
    n = (normal * (np.cos(a) * np.cos(b))[..., None] + e2 * (np.sin(a) * np.cos(b))[..., None]
         + e1 * np.broadcast_to(np.sin(b), a.shape[:1] + b.shape[1:])[..., None]).reshape(-1, 3)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    tilt = (np.abs(a) + np.abs(b)).reshape(-1)
    f1, f2 = _plane_basis(n)  # per candidate normal
    shifts = np.arange(-max_shift_mm, max_shift_mm + 1e-9, 1.0)
    slab = np.array([-2.0, 0.0, 2.0])
    disk = offsets[:, :1, None] * f1[None, :, :] + offsets[:, 1:, None] * f2[None, :, :]  # (P, N, 3)
    grid = np.asarray(spacing)
    shape = np.asarray(bone.shape)
    cost = np.zeros((len(n), len(shifts)))
    for si, d in enumerate(shifts):
        for h in slab:
            pts = point + d * normal + h * n[None, :, :] + disk  # (P, N, 3)
            idx = np.floor(pts / grid).astype(np.int64)
            ok = np.all((idx >= 0) & (idx < shape), axis=2)
            idx = np.where(ok[..., None], idx, 0)
            hits = bone[idx[..., 0], idx[..., 1], idx[..., 2]] & ok
            cost[:, si] += hits.sum(axis=0) / len(offsets) / len(slab)
    cost += 1e-3 * (tilt[:, None] + np.abs(shifts)[None, :] / 10)
    i, j = np.unravel_index(int(np.argmin(cost)), cost.shape)
    return point + shifts[j] * normal, n[i]


def _find_segments(volume: Volume, low: float, high: float) -> tuple[SpineSegments, np.ndarray, tuple]:
    arr = volume.array
    sz, sy, sx = volume.spacing_mm
    fz, fy, fx = (max(1, int(round(_WORK_MM / s))) for s in (sz, sy, sx))
    small = block_mean(arr, (fz, fy, fx))
    wsp = (sz * fz, sy * fy, sx * fx)
    solid = small > -500
    if not solid.any():
        raise InputError("no patient in the scan (nothing above −500 HU)", volume.source)
    objects, n_objects = ndi.label(solid)
    sizes = np.bincount(objects.ravel())
    sizes[0] = 0
    body = objects == int(np.argmax(sizes))  # the patient, not the table
    for k in range(body.shape[0]):
        body[k] = ndi.binary_fill_holes(body[k])
    xs = np.nonzero(body)[2]
    mid_x_mm = float(np.median(xs)) * wsp[2]
    bone = _bone(small, low, high)
    centre, thick, area_width = _track(bone, wsp, mid_x_mm, body)
    tracked = np.flatnonzero(np.isfinite(centre[:, 0]))
    if tracked.size < 3:
        raise InputError("no spine found: no vertebral body-like bone near the midline", volume.source)
    k0, k1 = tracked[0], tracked[-1]
    idx = np.arange(k0, k1 + 1)
    filled = np.empty((idx.size, 2))
    for c in range(2):
        filled[:, c] = np.interp(idx, tracked, centre[tracked, c])
    filled = ndi.median_filter(filled, size=(5, 1), mode="nearest")
    radius = float(np.clip(0.8 * np.median(thick[tracked]), 6.0, 16.0))
    filled[:, 0] = _anterior_centre_y(bone, idx, filled, float(np.median(thick[tracked])), wsp)
    centre_f = np.full_like(centre, np.nan)
    centre_f[k0 : k1 + 1] = filled
    line = _centre_line((idx + 0.5) * wsp[0], filled)
    discs = _find_discs(bone, wsp, line, radius, hu=small)
    bounds = [k0 * wsp[0]] + [float(p[0]) for p, _ in discs] + [(k1 + 1) * wsp[0]]
    segments = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if hi - lo < 8.0:
            continue
        ks = np.arange(int(lo / wsp[0]), min(int(np.ceil(hi / wsp[0])), small.shape[0]))
        ks = ks[np.isfinite(centre[ks, 0])] if ks.size else ks
        seg = Segment(lo, hi)
        if ks.size:
            seg.blob_area_mm2 = float(np.max(area_width[ks, 0]))
            seg.blob_width_mm = float(np.max(area_width[ks, 1]))
        segments.append(seg)
    flags = []
    if k0 == 0:
        flags.append("partial_fov:inferior")
    if k1 == small.shape[0] - 1:
        flags.append("partial_fov:superior")
    track_z = (np.arange(k0, k1 + 1) + 0.5) * wsp[0]
    spine = SpineSegments(track_z, filled, [float(p[0]) for p, _ in discs], segments, flags)
    spine.disc_planes = discs
    spine.body_half_depth_mm = float(np.median(thick[tracked]))
    spine.sacrum_at_bottom = _sacral_merge(bone, centre_f, k0, wsp)
    return spine, bone, wsp


def _rib_contacts(grown: np.ndarray, ordinal_level: dict, spacing, dx_mm: np.ndarray,
                  sacral_ordinal: int | None, reach_mm: float = 4.0, min_contact_mm3: float = 30.0) -> None:
    """Record on each segment how much of its grown vertebra (mm³) lies within ``reach_mm`` of
    rib-like bone, per side, and the sides where that reaches ``min_contact_mm3``.

    ``grown`` holds ordinal + 1 for vertebrae and ``_FOREIGN + k`` for lateral bone component k.
    A component near the sacral segment, or reaching the bottom of the box, is pelvis, not rib.
    Costovertebral joints are open in thin slices, so nearness counts, not touching.
    (Patient right: dx < 0.)"""
    sz, sy, sx = spacing
    size = tuple(2 * max(1, int(round(reach_mm / s))) + 1 for s in spacing)
    foreign = np.where(grown >= _FOREIGN, grown, 0)
    near = ndi.maximum_filter(foreign, size=size)
    vert = (grown > 0) & (grown < _FOREIGN) & (near > 0)
    voxel_mm3 = sz * sy * sx
    pelvis: set[int] = set()
    if sacral_ordinal is not None:
        pelvis = {int(c) for c in np.unique(near[vert & (grown == sacral_ordinal + 1)])}
        bottom = foreign[: max(1, grown.shape[0] // 20)]
        pelvis |= {int(c) for c in np.unique(bottom[bottom > 0])}
    rib_near = vert & ~np.isin(near, list(pelvis)) if pelvis else vert
    left = np.broadcast_to(dx_mm, grown.shape) >= 0
    counts_r = np.bincount(grown[rib_near & ~left], minlength=len(ordinal_level) + 2)
    counts_l = np.bincount(grown[rib_near & left], minlength=len(ordinal_level) + 2)
    rib_bone = foreign > 0
    if pelvis:
        rib_bone &= ~np.isin(foreign, list(pelvis))
    rib_per_slice = rib_bone.sum(axis=(1, 2)) * voxel_mm3
    for o, seg in ordinal_level.items():
        ks = np.flatnonzero((grown == o + 1).any(axis=(1, 2)))
        seg.rib_beside_mm3 = float(rib_per_slice[ks].sum()) if ks.size else 0.0
        right = float(counts_r[o + 1]) * voxel_mm3 if o + 1 < counts_r.size else 0.0
        left_v = float(counts_l[o + 1]) * voxel_mm3 if o + 1 < counts_l.size else 0.0
        seg.rib_contact_mm3 = right + left_v
        seg.rib_sides = [name for name, v in (("right", right), ("left", left_v)) if v >= min_contact_mm3]


_ORDER_UP = (["S1"] + [f"L{n}" for n in range(5, 0, -1)] + [f"T{n}" for n in range(12, 0, -1)]
             + [f"C{n}" for n in range(7, 0, -1)])


def _assign_levels(spine: SpineSegments) -> None:
    """Name the segments (bottom → top) from the landmarks in view.

    - Sacrum and a last rib-bearing vertebra both in view: the vertebrae between them are lumbar.
      Five is normal. Six gives L1–L6 (``transitional:L6``), four gives L1–L4
      (``transitional:4_lumbar``); L1 is then the first vertebra below the last rib, the
      convention of opportunistic L1 screening, and the flag asks for a review. Only ribs on both
      sides of a vertebra with its upper disc in view count as such evidence; otherwise, and for
      any other count, the names come from the sacrum with ``levels:rib_count_disagrees``.
    - Sacrum only: S1, then L5 … upwards. Last rib only (with a rib-free vertebra below it): T12
      there. Neither: provisional names (the lowest is T12 if it bears ribs, else L5), flagged.
    A vertebra bears ribs when bone running on laterally past the transverse processes touches it
    (see :func:`_rib_contacts`).
    """
    segs = spine.segments
    if not segs:
        return
    ribs = [bool(s.rib_sides) for s in segs]
    names: list[str | None] = [None] * len(segs)

    def from_index(i0: int, name: str) -> None:
        start = _ORDER_UP.index(name)
        for i in range(len(segs)):
            j = start + (i - i0)
            names[i] = _ORDER_UP[j] if 0 <= j < len(_ORDER_UP) else None

    lowest_rib = next((i for i, r in enumerate(ribs) if r), None)
    if spine.sacrum_at_bottom and lowest_rib is not None and lowest_rib >= 1:
        n_lumbar = lowest_rib - 1  # segments strictly between S1 (index 0) and the last rib-bearing one
        # transitional anatomy needs strong evidence: ribs on both sides of a vertebra whose upper
        # disc was found (the top segment may hold parts of two vertebrae)
        strong = len(segs[lowest_rib].rib_sides) == 2 and lowest_rib < len(segs) - 1
        from_index(lowest_rib, "T12")
        names[0] = "S1"
        if n_lumbar == 6 and strong:
            names[1] = "L6"
            spine.flags.append("transitional:L6 (6 rib-free vertebrae above the sacrum)")
        elif n_lumbar == 4 and strong:
            spine.flags.append("transitional:4_lumbar (4 rib-free vertebrae above the sacrum: sacralised L5 or T13)")
        elif n_lumbar != 5:
            # weak or implausible rib evidence: trust the sacrum and say so
            from_index(0, "S1")
            spine.flags.append(f"levels:rib_count_disagrees ({n_lumbar} rib-free vertebrae above the sacrum)")
        spine.flags.append("levels:from_sacrum_and_last_rib")
    elif spine.sacrum_at_bottom:
        from_index(0, "S1")
        spine.flags.append("levels:from_sacrum")
    elif lowest_rib is not None and lowest_rib >= 1:
        from_index(lowest_rib, "T12")
        spine.flags.append("levels:from_last_rib")
    else:
        # no landmark: the lowest is T12 when ribs lie beside it (thoracic field of view), else L5
        thoracic = ribs[0] or segs[0].rib_beside_mm3 >= 500.0
        from_index(0, "T12" if thoracic else "L5")
        spine.flags.append("levels:provisional (no sacrum or last rib in view)")
    for seg, name in zip(segs, names):
        seg.level = name


def segment_spine(volume: Volume, *, bone_low_hu: float = 100.0, bone_high_hu: float = 200.0,
                  label_low_hu: float = 100.0, lateral_mm: float = 55.0, rib_lateral_mm: float = 38.0,
                  min_hole_hu: float = 30.0, arch_hu: float = 600.0, dim_cost: float = 4.0,
                  max_path_cost: float = 150.0, up_factor: float = 2.0, rim_hu: float = 150.0) -> LabelMap:
    """Find, split and label the vertebrae of a CT. Returns VerSe ids on the volume's own grid,
    with ``metadata["flags"]`` (level landmarks, partial field of view, transitional anatomy) and
    ``metadata["segments"]`` (per vertebra: extent, rib sides, level).

    ``bone_low_hu``/``bone_high_hu`` drive localisation; ``label_low_hu`` is the outline of the
    final masks and ``rim_hu`` the least HU of a surface voxel (the partial-volume rim).
    ``lateral_mm`` bounds the vertebrae (``rib_lateral_mm`` for rib-bearing ones). The geodesic
    growth that splits them: voxels dimmer than ``arch_hu`` cost up to ``1 + dim_cost`` per mm,
    climbing costs ``up_factor`` times more, paths dearer than ``max_path_cost`` are dropped.
    ``min_hole_hu``: a hole behind the body's core darker than this is not marrow.
    """
    if volume.metadata.get("modality") not in (None, "CT"):
        raise InputError(f"the classical segmenter needs CT, got {volume.metadata.get('modality')}", volume.source)
    canon, reo = canonicalize(volume, copy=False)
    spine, _, wsp = _find_segments(canon, bone_low_hu, bone_high_hu)
    verse = load_label_scheme("verse")
    sz, sy, sx = canon.spacing_mm
    # full resolution within a box around the track
    ty, tx = spine.track_yx_mm[:, 0], spine.track_yx_mm[:, 1]
    y0 = max(0, int((ty.min() - 40) / sy)); y1 = min(canon.shape[1], int((ty.max() + 85) / sy) + 1)
    side_mm = lateral_mm + 25.0  # room beyond the lateral limit to recognise ribs and iliac bones
    x0 = max(0, int((tx.min() - side_mm) / sx)); x1 = min(canon.shape[2], int((tx.max() + side_mm) / sx) + 1)
    z0 = max(0, int(spine.track_z_mm[0] / sz) - 1 - int(10 / sz)); z1 = min(canon.shape[0], int(spine.track_z_mm[-1] / sz) + 2 + int(10 / sz))
    crop = np.asarray(canon.array[z0:z1, y0:y1, x0:x1])
    zz = (np.arange(z0, z1) + 0.5) * sz
    track_y = np.interp(zz, spine.track_z_mm, ty)
    track_x = np.interp(zz, spine.track_z_mm, tx)

    def body_hole(k, obj, region, hu):
        # fill the body's trabecular interior (however dark: fatty osteoporotic marrow); leave the
        # canal (behind the body's posterior wall) and dark holes between the posterior elements open
        cy = (y0 + obj[0].start + np.mean(np.nonzero(region)[0])) * sy
        behind_mm = cy - track_y[k]
        if behind_mm > 1.5 * spine.body_half_depth_mm:
            return False
        return not (behind_mm > 0.5 * spine.body_half_depth_mm and float(np.mean(hu)) < min_hole_hu)

    # the growth below runs through the filled canal (thin pedicles may not join the arch to the
    # body at this threshold); the canal and dark holes are cleared from the result afterwards
    bone, open_holes = _bone(crop, label_low_hu, bone_high_hu, keep_hole=body_hole)
    _close_body_rings(bone, zz, track_y, track_x, (y0 * sy, x0 * sx), (sy, sx), spine.body_half_depth_mm)
    vessels = _enhanced_vessels(crop, canon.spacing_mm, (np.arange(y0, y1) * sy), (np.arange(x0, x1) * sx),
                                track_y, track_x, spine.body_half_depth_mm)
    bone &= ~vessels
    # keep bone connected to the tracked bodies
    lab, n = ndi.label(bone)
    seeds = set()
    for k in range(bone.shape[0]):
        if spine.track_z_mm[0] - sz <= zz[k] <= spine.track_z_mm[-1] + sz:
            j, i = int(track_y[k] / sy) - y0, int(track_x[k] / sx) - x0
            if 0 <= j < bone.shape[1] and 0 <= i < bone.shape[2] and lab[k, j, i] > 0:
                seeds.add(int(lab[k, j, i]))
    keep = np.zeros(n + 1, bool)
    keep[list(seeds)] = True
    all_bone = bone.copy()  # ribs may be apart from the spine (open costovertebral joints)
    bone &= keep[lab]
    # split at the discs: planes normal to the track
    yy = ((np.arange(y0, y1)) * sy)[None, :, None]
    xx = ((np.arange(x0, x1)) * sx)[None, None, :]
    seg_index = np.zeros(bone.shape, np.int16)
    hd = spine.body_half_depth_mm
    zz32, yy32, xx32 = (np.asarray(a, np.float32) for a in (zz[:, None, None], yy, xx))
    window_mm = 12.0 + 2.5 * hd + 5.0  # the planes matter near the body only (markers, carving)
    for point, nrm in spine.disc_planes:
        k0 = int(np.searchsorted(zz, point[0] - window_mm))
        k1 = int(np.searchsorted(zz, point[0] + window_mm))
        seg_index[k1:] += 1
        p32, n32 = point.astype(np.float32), nrm.astype(np.float32)
        near = (zz32[k0:k1] - p32[0]) * n32[0] + (yy32 - p32[1]) * n32[1] + (xx32 - p32[2]) * n32[2]
        seg_index[k0:k1] += (near > 0).astype(np.int16)
        _carve_disc(bone[k0:k1], crop[k0:k1], near, zz[k0:k1], yy, xx, point, nrm, hd)
    # segment ordinal by disc count; map to the kept segments by their z ranges
    bounds = [spine.track_z_mm[0] - 0.5 * wsp[0]] + list(spine.discs_z_mm) + [spine.track_z_mm[-1] + 0.5 * wsp[0]]
    ordinal_level = {}
    for o, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        for seg in spine.segments:
            if abs(seg.z_lo_mm - lo) < wsp[0] + 1e-6 or (seg.z_lo_mm >= lo - 1e-6 and seg.z_hi_mm <= hi + 1e-6):
                ordinal_level[o] = seg
    # seeds: each segment's body core (near the track, clear of the cut planes); the rest of the
    # bone goes to the seed it reaches most cheaply through bone, so an arch stays with the body
    # its pedicles join
    lateral = np.abs(xx - track_x[:, None, None])
    radial = np.hypot(yy - track_y[:, None, None], lateral)
    # the body region (around the track, in front of the pedicles) is labelled by the disc planes;
    # the posterior elements then grow from it through bone
    body_radius = float(np.clip(np.median([s.blob_width_mm for s in spine.segments if s.blob_width_mm] or [40]) / 2, 12, 28))
    in_front = (yy - track_y[:, None, None]) <= 0.5 * body_radius
    body_zone = bone & (radial <= body_radius) & in_front
    # growth labels: ordinal + 1 for each vertebra (named after the growth, from what it touches)
    markers = np.zeros(bone.shape, np.int32)
    for o in ordinal_level:
        markers[body_zone & (seg_index == o)] = o + 1
    if spine.sacrum_at_bottom and spine.disc_planes and 0 in ordinal_level:
        # the sacrum below S1's top curves back out of the tracked column: all midline bone well
        # below the lumbosacral disc is sacral (it must not be grown into from L5)
        below = (zz < spine.disc_planes[0][0][0] - 10.0)[:, None, None] & (lateral <= 35.0)
        markers[bone & below & (seg_index == 0)] = 1
    # ribs and iliac bones: bone beyond the lateral limit that runs on well past it. Each is seeded
    # with a label of its own, so the growth from the vertebrae stops where they meet, and the
    # contacts tell which vertebrae bear ribs
    foreign = all_bone & (lateral > lateral_mm)
    flab, nf = ndi.label(foreign)
    far = np.zeros(nf + 1, bool)
    if nf:
        far[np.unique(flab[foreign & (lateral > lateral_mm + 15.0)])] = True
        far[0] = False
        markers[far[flab]] = _FOREIGN + flab[far[flab]]
    # each bone voxel joins the body it reaches most cheaply through bone; dim voxels (joint
    # spaces, gaps between neighbouring arches) cost more to cross than dense cortex
    dim = np.clip((arch_hu - crop.astype(np.float32)) / max(arch_hu - label_low_hu, 1.0), 0.0, 1.0)
    weight = np.where(bone | far[flab], 1.0 + dim_cost * dim, np.inf)
    grown, cost = geodesic_grow(markers, weight, canon.spacing_mm, up_factor=up_factor,
                                free_label=1 if spine.sacrum_at_bottom else 0)
    grown[cost > max_path_cost] = 0
    _rib_contacts(grown, ordinal_level, canon.spacing_mm, xx - track_x[:, None, None],
                  sacral_ordinal=0 if spine.sacrum_at_bottom else None)
    _assign_levels(spine)
    ordinal_id = np.zeros(len(bounds) + 1, np.int16)
    for o, seg in ordinal_level.items():
        if seg.level in verse:
            ordinal_id[o + 1] = verse[seg.level]
    grown[(grown >= _FOREIGN) | (lateral > lateral_mm)] = 0
    out_crop = ordinal_id[grown]
    out_crop[open_holes] = 0
    for o, seg in ordinal_level.items():
        if seg.level in verse and (seg.level.startswith("T") or seg.rib_sides):
            out_crop[(out_crop == verse[seg.level]) & (lateral > rib_lateral_mm)] = 0
    _fill_enclosed_marrow(out_crop)
    # the partial-volume rim: a surface voxel dimmer than ``rim_hu`` is mostly soft tissue
    fg = out_crop > 0
    out_crop[fg & ~ndi.binary_erosion(fg) & (crop < rim_hu)] = 0
    full = np.zeros(canon.shape, np.int16)
    full[z0:z1, y0:y1, x0:x1] = out_crop
    present = {s.level: verse[s.level] for s in spine.segments if s.level in verse and (out_crop == verse[s.level]).any()}
    labels_canon = LabelMap(
        array=full, spacing_mm=canon.spacing_mm, origin_lps_mm=canon.origin_lps_mm, direction_lps=canon.direction_lps,
        labels=dict(sorted(present.items(), key=lambda kv: level_rank(kv[0]))),
        metadata={"flags": list(spine.flags), "segments": [dataclasses.asdict(s) for s in spine.segments]},
        source="classical segmentation",
    )
    return uncanonicalize(labels_canon, reo)


def _carve_disc(bone, crop, signed, zz, yy, xx, point, normal, half_depth_mm: float, reach_mm: float = 12.0) -> None:
    """Remove the disc between two endplates from ``bone`` (in place).

    Degenerate or thin discs seen in thick slices can be as bright as bone. Along the disc's normal,
    the mean HU across the body has a trough (the disc) between two endplate peaks; the disc is the
    part of the trough below the half-way level on each side, within the body (not behind its
    posterior wall, where the facet joints are)."""
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
    hbin = np.round(sd[body]).astype(np.int64) + int(reach_mm)
    counts = np.bincount(hbin, minlength=2 * int(reach_mm) + 1)
    sums = np.bincount(hbin, weights=crop[sub][body].astype(np.float64), minlength=2 * int(reach_mm) + 1)
    if (counts == 0).any():
        return
    prof = ndi.gaussian_filter1d(sums / counts, 1.0)
    c = int(reach_mm)
    trough = c - 2 + int(np.argmin(prof[c - 2 : c + 3]))  # at the least-bone plane, not in a dark marrow cavity beside it
    lo_peak = int(np.argmax(prof[:trough + 1]))
    hi_peak = trough + int(np.argmax(prof[trough:]))
    if min(prof[lo_peak], prof[hi_peak]) - prof[trough] < 50.0:
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
    # endplates are seldom parallel (wedged discs): each 8 mm tile of the disc moves the slab along
    # the normal, up to 4 mm, to where it is darkest
    e1, e2 = _plane_basis(np.asarray(normal, float))
    rel = [zz[sub, None, None] - point[0], yy - point[1], xx - point[2]]
    u = rel[0] * e1[0] + rel[1] * e1[1] + rel[2] * e1[2]
    v = rel[0] * e2[0] + rel[1] * e2[1] + rel[2] * e2[2]
    tile_mm = 8.0
    tu = np.floor(np.broadcast_to(u, sd.shape)[body] / tile_mm).astype(np.int64)
    tv = np.floor(np.broadcast_to(v, sd.shape)[body] / tile_mm).astype(np.int64)
    tile = (tu - tu.min()) * (tv.max() - tv.min() + 1) + (tv - tv.min())
    h = sd[body]
    hu = crop[sub][body].astype(np.float64)
    shifts = np.arange(-4.0, 4.0 + 1e-9, 1.0)
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
    carve = (h >= lo_mm + shift) & (h <= hi_mm + shift) & (hu >= prof[trough] - 40.0)
    where = np.nonzero(body)
    bone[sub][tuple(w[carve] for w in where)] = False


def _fill_enclosed_marrow(labels: np.ndarray) -> None:
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


def _enhanced_vessels(crop: np.ndarray, spacing, yy_mm, xx_mm, track_y, track_x, half_depth_mm: float,
                      window_mm: float = 5.0, max_sd_hu: float = 20.0, min_volume_mm3: float = 500.0) -> np.ndarray:
    """Contrast-filled vessels beside the spine (aorta, vena cava, iliac vessels): bright like bone
    but homogeneous. Components of voxels whose neighbourhood (``window_mm``) averages above 120 HU
    with an SD under ``max_sd_hu``, at least ``min_volume_mm3``, mostly outside the body's core and
    centred in front of its posterior wall, widened by the window (their wall and partial-volume
    rim) where not brighter than the blood. Without contrast, blood is
    far below the bone threshold and nothing is found."""
    size = tuple(max(1, 2 * int(round(window_mm / 2 / s)) + 1) for s in spacing)
    a = crop.astype(np.float32)
    mean = ndi.uniform_filter(a, size)
    var = ndi.uniform_filter(a * a, size) - mean * mean
    cand = (mean > 120.0) & (var < max_sd_hu**2) & (a > 100.0)
    out = np.zeros(crop.shape, bool)
    lab, n = ndi.label(cand)
    if n == 0:
        return out
    voxel = float(np.prod(spacing))
    counts = np.bincount(lab.ravel())
    keep = np.zeros(n + 1, bool)
    objects = ndi.find_objects(lab)
    for i in np.flatnonzero(counts * voxel >= min_volume_mm3):
        if i == 0:
            continue
        box = objects[i - 1]
        region = lab[box] == i
        k, j, m = np.nonzero(region)
        ks = k + box[0].start
        dy = yy_mm[j + box[1].start] - track_y[ks]
        dx = xx_mm[m + box[2].start] - track_x[ks]
        in_core = np.count_nonzero(np.hypot(dy, dx) <= 0.8 * half_depth_mm)
        keep[i] = in_core < 0.2 * k.size and float(np.mean(dy)) < 0.5 * half_depth_mm
    if keep.any():
        # the wall and partial-volume rim, as wide as the window, unless brighter than the blood
        # (cortex where the vessel lies against the vertebra)
        blood_hu = float(np.max(ndi.mean(a, lab, np.flatnonzero(keep))))
        out = ndi.binary_dilation(keep[lab], np.ones(size, bool)) & (a < 1.25 * blood_hu)
    return out


def _close_body_rings(bone: np.ndarray, zz, track_y, track_x, origin_yx_mm, spacing_yx, half_depth_mm: float,
                      gap_mm: float = 3.0) -> None:
    """Fill the body's interior where its cortical ring has gaps up to ``gap_mm`` wide (thin or
    osteoporotic cortex at partial volume): holes that appear after a closing, centred in the body."""
    sy, sx = spacing_yx
    ry, rx = max(1, int(round(gap_mm / sy))), max(1, int(round(gap_mm / sx)))
    yy, xx = np.mgrid[-ry : ry + 1, -rx : rx + 1]
    disk = (yy * sy) ** 2 + (xx * sx) ** 2 <= gap_mm**2 + 1e-6
    pad = (ry + 1, rx + 1)
    reach = 2.5 * half_depth_mm  # a window around the body is enough
    for k in range(bone.shape[0]):
        j0 = max(0, int((track_y[k] - reach - origin_yx_mm[0]) / sy))
        j1 = max(j0, min(bone.shape[1], int((track_y[k] + reach - origin_yx_mm[0]) / sy) + 1))
        i0 = max(0, int((track_x[k] - reach - origin_yx_mm[1]) / sx))
        i1 = max(i0, min(bone.shape[2], int((track_x[k] + reach - origin_yx_mm[1]) / sx) + 1))
        win = bone[k, j0:j1, i0:i1]
        if not win.any():
            continue
        sl = np.pad(win, ((pad[0], pad[0]), (pad[1], pad[1])))
        closed = ndi.binary_closing(sl, disk)[pad[0] : -pad[0], pad[1] : -pad[1]]
        holes, n = ndi.label(ndi.binary_fill_holes(closed) & ~closed)
        for h, obj in enumerate(ndi.find_objects(holes), start=1):
            region = holes[obj] == h
            j, i = np.nonzero(region)
            cy = origin_yx_mm[0] + (j0 + obj[0].start + j.mean()) * sy
            cx = origin_yx_mm[1] + (i0 + obj[1].start + i.mean()) * sx
            if abs(cy - track_y[k]) <= 0.5 * half_depth_mm and abs(cx - track_x[k]) <= half_depth_mm:
                win[obj] |= region


class ClassicalSegmenter:
    """Segmenter protocol wrapper of :func:`segment_spine`."""

    name = "classical"

    def __init__(self, **options):
        self.options = options

    def segment(self, volume: Volume) -> LabelMap:
        return segment_spine(volume, **self.options)

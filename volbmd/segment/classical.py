"""Classical vertebra segmentation and level labelling for CT: no weights, no training.

Steps, in the canonical LPS frame (axis 0 inferior → superior, 1 anterior → posterior, 2 right → left):

1. Bone: voxels above ``bone_low_hu`` connected to voxels above ``bone_high_hu`` (cortex), holes
   filled per axial slice (osteoporotic trabecular bone inside its cortical ring is kept).
2. Spine track: in each slice, the vertebral body is the thickest bone blob near the patient's
   midline; it is followed slice to slice from the thickest one up and down (≈2 mm working grid).
3. Discs: minima of the bone area around the track (the disc is the gap between two bodies).
4. Vertebrae: the bone connected to the tracked bodies, split by planes normal to the track at the
   discs, clipped laterally (tighter where ribs attach).
5. Levels: counted from the sacrum (a wide, solid S1 blob at the bottom) and from the last
   rib-bearing vertebra (T12); 6 lumbar-type vertebrae give L6 and 4 raise a transitional flag; a
   field of view without either landmark gets provisional labels and a flag.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi
from scipy.signal import find_peaks

from volbmd.errors import InputError
from volbmd.geometry import block_mean, canonicalize, uncanonicalize
from volbmd.labels import LEVELS, level_rank, load_label_scheme
from volbmd.volume import LabelMap, Volume

__all__ = ["ClassicalSegmenter", "SpineSegments", "segment_spine"]

_WORK_MM = 2.0  # working grid for localisation


@dataclass
class Segment:
    z_lo_mm: float
    z_hi_mm: float
    rib_ml: float = 0.0
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


def _bone(arr: np.ndarray, low: float, high: float) -> np.ndarray:
    """Bone above ``low`` connected to bone above ``high``, with holes filled per axial slice (the
    trabecular interior inside its cortical ring, even when osteoporotic)."""
    low_mask = arr > low
    lab, n = ndi.label(low_mask)
    if n == 0:
        return low_mask
    keep = np.zeros(n + 1, bool)
    keep[np.unique(lab[arr > high])] = True
    keep[0] = False
    bone = keep[lab]
    for k in range(bone.shape[0]):
        if bone[k].any():
            bone[k] = ndi.binary_fill_holes(bone[k])
    return bone


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
        gap = 0
        k = seed + direction
        while 0 <= k < nz and gap <= max_gap:
            near = [c for c in cand[k] if np.hypot(c[0] - last[0], c[1] - last[1]) <= 15.0 and c[2] >= 3.0]
            if near:
                c = max(near, key=lambda t: t[2])
                centre[k] = c[:2]
                thick[k], area[k], width[k] = c[2], c[3], c[4]
                last = np.array(c[:2])
                gap = 0
            else:
                gap += 1
            k += direction
    return centre, thick, np.stack([area, width], axis=1)


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


def _body_area_profile(bone: np.ndarray, centre: np.ndarray, spacing, radius_mm: float) -> np.ndarray:
    sz, sy, sx = spacing
    yy = (np.arange(bone.shape[1]) * sy)[:, None]
    xx = (np.arange(bone.shape[2]) * sx)[None, :]
    prof = np.zeros(bone.shape[0])
    for k in range(bone.shape[0]):
        if np.isfinite(centre[k, 0]):
            disc = (yy - centre[k, 0]) ** 2 + (xx - centre[k, 1]) ** 2 <= radius_mm**2
            prof[k] = (bone[k] & disc).sum() * sy * sx
    return prof


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
    centre_f = np.full_like(centre, np.nan)
    centre_f[k0 : k1 + 1] = filled
    radius = float(np.clip(0.8 * np.median(thick[tracked]), 6.0, 16.0))
    prof = _body_area_profile(bone, centre_f, wsp, radius)
    prof_s = ndi.gaussian_filter1d(prof[k0 : k1 + 1], sigma=max(0.5, 1.5 / wsp[0]))
    peak = prof_s.max()
    minima, _ = find_peaks(-prof_s, distance=max(1, int(round(14.0 / wsp[0]))), prominence=0.3 * peak)
    discs_k = [k0 + int(m) for m in minima]
    z_mm = lambda k: (k + 0.5) * wsp[0]  # noqa: E731
    bounds = [k0 * wsp[0]] + [z_mm(k) for k in discs_k] + [(k1 + 1) * wsp[0]]
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
    spine = SpineSegments(track_z, filled, [z_mm(k) for k in discs_k], segments, flags)
    spine.sacrum_at_bottom = _sacral_merge(bone, centre_f, k0, wsp)
    _rib_evidence(spine, small, wsp, low, high)
    return spine, bone, wsp


def _rib_evidence(spine: SpineSegments, small: np.ndarray, wsp, low: float, high: float) -> None:
    """Bone 50–130 mm lateral of the track in each segment's slab (ml), above the pelvis.

    The pelvis is the lateral bone continuous from the bottom of the scan; segments within it get 0.
    """
    raw = (small > high)
    sy, sx = wsp[1], wsp[2]
    yy = (np.arange(small.shape[1]) * sy)[:, None]
    xx = (np.arange(small.shape[2]) * sx)[None, :]
    per_slice = np.zeros(small.shape[0])
    for k in range(small.shape[0]):
        zc = (k + 0.5) * wsp[0]
        j = int(np.clip(np.searchsorted(spine.track_z_mm, zc), 0, len(spine.track_z_mm) - 1))
        cy, cx = spine.track_yx_mm[j]
        lateral = np.abs(xx - cx)
        band = (lateral >= 50) & (lateral <= 130) & (yy >= cy - 30) & (yy <= cy + 60)
        per_slice[k] = (raw[k] & band).sum() * wsp[0] * sy * sx / 1000.0
    pelvis_top = -1
    if spine.sacrum_at_bottom or per_slice[: max(1, int(20 / wsp[0]))].max() > 0.05:
        quiet = 0
        for k in range(small.shape[0]):
            quiet = quiet + 1 if per_slice[k] < 0.01 else 0
            if quiet >= max(2, int(round(6.0 / wsp[0]))):
                pelvis_top = k
                break
    for seg in spine.segments:
        ks = range(int(seg.z_lo_mm / wsp[0]), min(int(np.ceil(seg.z_hi_mm / wsp[0])), small.shape[0]))
        seg.rib_ml = float(sum(per_slice[k] for k in ks if k > pelvis_top))


def _assign_levels(spine: SpineSegments, rib_ml: float = 2.0) -> None:
    """Name the segments (bottom → top).

    From the sacrum when the track ends in the pelvis (S1, then L5 … upwards); else from the last
    rib-bearing segment (T12) when a segment without ribs lies below it; else provisional names with
    a flag. Transitional anatomy (L6/T13) is not inferred: lateral bone (12th ribs hanging at L1,
    iliac crests at L4) does not tell rib-bearing vertebrae apart reliably enough.
    """
    segs = spine.segments
    if not segs:
        return
    names: list[str | None] = [None] * len(segs)
    order_up = ["S1"] + [f"L{n}" for n in range(5, 0, -1)] + [f"T{n}" for n in range(12, 0, -1)] + [f"C{n}" for n in range(7, 0, -1)]
    ribs = [s.rib_ml >= rib_ml for s in segs]
    if spine.sacrum_at_bottom:
        for i in range(len(segs)):
            names[i] = order_up[i] if i < len(order_up) else None
        spine.flags.append("levels:from_sacrum")
    elif any(ribs) and not ribs[0]:
        first = next(i for i, r in enumerate(ribs) if r)  # lowest rib-bearing segment = T12
        t12 = order_up.index("T12")
        for i in range(len(segs)):
            j = t12 + (i - first)
            names[i] = order_up[j] if 1 <= j < len(order_up) else None
        spine.flags.append("levels:from_last_rib")
    else:
        # no landmark in view: provisional names (lowest = T12 with ribs, else L5), flagged
        start = order_up.index("T12") if any(ribs) else order_up.index("L5")
        for i in range(len(segs)):
            names[i] = order_up[start + i] if start + i < len(order_up) else None
        spine.flags.append("levels:provisional (no sacrum or last rib in view)")
    for seg, name in zip(segs, names):
        seg.level = name


def segment_spine(volume: Volume, *, bone_low_hu: float = 100.0, bone_high_hu: float = 200.0,
                  label_low_hu: float = 100.0, lateral_mm: float = 55.0, rib_lateral_mm: float = 38.0) -> LabelMap:
    """Find, split and label the vertebrae of a CT. Returns VerSe ids on the volume's own grid.

    ``bone_low_hu``/``bone_high_hu`` drive localisation; ``label_low_hu`` is the outline of the
    final masks (higher trims the partial-volume rim of thick slices).
    """
    if volume.metadata.get("modality") not in (None, "CT"):
        raise InputError(f"the classical segmenter needs CT, got {volume.metadata.get('modality')}", volume.source)
    canon, reo = canonicalize(volume, copy=False)
    spine, _, wsp = _find_segments(canon, bone_low_hu, bone_high_hu)
    _assign_levels(spine)
    verse = load_label_scheme("verse")
    sz, sy, sx = canon.spacing_mm
    # full resolution within a box around the track
    ty, tx = spine.track_yx_mm[:, 0], spine.track_yx_mm[:, 1]
    y0 = max(0, int((ty.min() - 40) / sy)); y1 = min(canon.shape[1], int((ty.max() + 85) / sy) + 1)
    x0 = max(0, int((tx.min() - lateral_mm - 5) / sx)); x1 = min(canon.shape[2], int((tx.max() + lateral_mm + 5) / sx) + 1)
    z0 = max(0, int(spine.track_z_mm[0] / sz) - 1 - int(10 / sz)); z1 = min(canon.shape[0], int(spine.track_z_mm[-1] / sz) + 2 + int(10 / sz))
    crop = np.asarray(canon.array[z0:z1, y0:y1, x0:x1])
    bone = _bone(crop, label_low_hu, bone_high_hu)
    zz = (np.arange(z0, z1) + 0.5) * sz
    track_y = np.interp(zz, spine.track_z_mm, ty)
    track_x = np.interp(zz, spine.track_z_mm, tx)
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
    bone &= keep[lab]
    # split at the discs: planes normal to the track
    yy = ((np.arange(y0, y1)) * sy)[None, :, None]
    xx = ((np.arange(x0, x1)) * sx)[None, None, :]
    seg_index = np.zeros(bone.shape, np.int16)
    dz = np.gradient(spine.track_z_mm)
    tangent = np.stack([np.ones_like(dz), np.gradient(ty) / dz, np.gradient(tx) / dz], axis=1)
    for zd in spine.discs_z_mm:
        j = int(np.clip(np.searchsorted(spine.track_z_mm, zd), 0, len(spine.track_z_mm) - 1))
        nrm = tangent[j] / np.linalg.norm(tangent[j])
        py, px = np.interp(zd, spine.track_z_mm, ty), np.interp(zd, spine.track_z_mm, tx)
        signed = (zz[:, None, None] - zd) * nrm[0] + (yy - py) * nrm[1] + (xx - px) * nrm[2]
        seg_index += (signed > 0).astype(np.int16)
    # segment ordinal by disc count; map to the kept segments by their z ranges
    bounds = [spine.track_z_mm[0] - 0.5 * wsp[0]] + list(spine.discs_z_mm) + [spine.track_z_mm[-1] + 0.5 * wsp[0]]
    ordinal_level = {}
    for o, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        for seg in spine.segments:
            if abs(seg.z_lo_mm - lo) < wsp[0] + 1e-6 or (seg.z_lo_mm >= lo - 1e-6 and seg.z_hi_mm <= hi + 1e-6):
                ordinal_level[o] = seg
    # seeds: each segment's body core (near the track, clear of the cut planes); the rest of the
    # bone goes to the seed it reaches first through bone (geodesic growth: a flat watershed), so
    # an arch stays with the body its pedicles join
    from skimage.segmentation import watershed

    lateral = np.abs(xx - track_x[:, None, None])
    radial = np.hypot(yy - track_y[:, None, None], lateral)
    # the body region (around the track, in front of the pedicles) is labelled by the disc planes;
    # the posterior elements then grow from it through bone
    body_radius = float(np.clip(np.median([s.blob_width_mm for s in spine.segments if s.blob_width_mm] or [40]) / 2, 12, 28))
    in_front = (yy - track_y[:, None, None]) <= 0.5 * body_radius
    body_zone = bone & (radial <= body_radius) & in_front
    markers = np.zeros(bone.shape, np.int32)
    for o, seg in ordinal_level.items():
        if seg.level is None or seg.level not in verse:
            continue
        markers[body_zone & (seg_index == o)] = verse[seg.level]
    limit = np.where(lateral <= lateral_mm, True, False)
    grown = watershed(np.zeros(bone.shape, np.uint8), markers=markers, mask=bone & limit)
    out_crop = grown.astype(np.int16)
    for o, seg in ordinal_level.items():
        if seg.level in verse and (seg.level.startswith("T") or seg.rib_ml >= 2.0):
            out_crop[(out_crop == verse[seg.level]) & (lateral > rib_lateral_mm)] = 0
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


class ClassicalSegmenter:
    """Segmenter protocol wrapper of :func:`segment_spine`."""

    name = "classical"

    def __init__(self, **options):
        self.options = options

    def segment(self, volume: Volume) -> LabelMap:
        return segment_spine(volume, **self.options)

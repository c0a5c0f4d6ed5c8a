"""Split the bone between the vertebrae: body cores between the disc planes seed a geodesic growth
through bone (the Numba kernel), so each arch goes to the body its pedicles join; ribs and iliac
bones get seeds of their own, so growth stops where they meet and their contacts tell which
vertebrae bear ribs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from volbmd.segment.classical.options import GrowthOptions, OutlineOptions
from volbmd.segment.classical.outline import (
    bone_with_holes,
    carve_disc,
    close_body_rings,
    enhanced_vessels,
    fill_enclosed_marrow,
)
from volbmd.segment.classical.types import Segment, SpacingZYX, SpineSegments
from volbmd.slicewise import label_stats
from volbmd.volume import Volume
from volbmd_kernels.geodesic import geodesic_grow

__all__ = ["FOREIGN", "Grown", "grow_vertebrae", "rib_heads", "rib_head_ordinal", "final_labels"]

FOREIGN = 2**30  # growth labels of ribs and iliac bones: FOREIGN + component


@dataclass
class Grown:
    """The growth in a box around the spine: ``labels`` holds ordinal + 1 per vertebra (0 below the
    first disc) and ``FOREIGN + k`` for rib and pelvic bone component k."""

    labels: np.ndarray
    open_holes: np.ndarray  # canal and dark holes behind the bodies (never vertebra)
    crop_hu: np.ndarray
    box: tuple[slice, slice, slice]
    lateral_mm: np.ndarray  # |x - centre line x| per voxel (broadcast)
    dx_mm: np.ndarray  # x - centre line x per voxel (broadcast; patient right < 0)
    by_ordinal: dict[int, Segment]
    rib_zone: np.ndarray  # where a rib's head and neck may lie: beside and behind the body's centre (broadcast)
    seg_index: np.ndarray  # which gap between disc planes each voxel lies in (the ordinal)
    rib_like: np.ndarray  # per foreign component k (label FOREIGN + k): thin enough to be a rib


def grow_vertebrae(canon: Volume, spine: SpineSegments, outline: OutlineOptions, growth: GrowthOptions) -> Grown:
    sz, sy, sx = canon.spacing_mm
    ty, tx = spine.track_yx_mm[:, 0], spine.track_yx_mm[:, 1]
    y0 = max(0, int((ty.min() - 40) / sy))
    y1 = min(canon.shape[1], int((ty.max() + 85) / sy) + 1)
    side_mm = growth.lateral_mm + 25.0  # room beyond the lateral limit to recognise ribs and iliac bones
    x0 = max(0, int((tx.min() - side_mm) / sx))
    x1 = min(canon.shape[2], int((tx.max() + side_mm) / sx) + 1)
    z0 = max(0, int(spine.track_z_mm[0] / sz) - 1 - int(10 / sz))
    z1 = min(canon.shape[0], int(spine.track_z_mm[-1] / sz) + 2 + int(10 / sz))
    crop = np.asarray(canon.array[z0:z1, y0:y1, x0:x1])
    zz = (np.arange(z0, z1) + 0.5) * sz
    yy_mm = (np.arange(y0, y1) + 0.5) * sy
    xx_mm = (np.arange(x0, x1) + 0.5) * sx
    track_y = np.interp(zz, spine.track_z_mm, ty)
    track_x = np.interp(zz, spine.track_z_mm, tx)
    hd = spine.body_half_depth_mm
    hd_z = (
        np.interp(zz, spine.track_z_mm, spine.track_half_depth_mm)
        if spine.track_half_depth_mm is not None
        else np.full(zz.shape, hd)
    )
    # in front of the bodies lie the heart and the vessels (bright with contrast), never a vertebra
    front = yy_mm[None, :, None] < (track_y - growth.front_factor * hd_z - growth.front_margin_mm)[:, None, None]

    def body_holes(holes, n):
        # fill the body's trabecular interior (however dark: fatty osteoporotic marrow); leave the
        # canal (behind the body's posterior wall) and dark holes between the posterior elements open
        _, com, mean_hu = label_stats(holes, n, crop)
        behind_mm = (com[:, 1] + 0.5) * sy + y0 * sy - track_y[np.round(com[:, 0]).astype(int)]
        marrow = (behind_mm <= 1.5 * hd) & ~((behind_mm > 0.5 * hd) & (mean_hu < outline.min_hole_hu))
        marrow[0] = True
        return marrow

    # the growth below runs through the filled canal (thin pedicles may not join the arch to the
    # body at this threshold); the canal and dark holes are cleared from the result afterwards
    bone, open_holes = bone_with_holes(crop, outline.label_low_hu, outline.bone_high_hu, body_holes)
    close_body_rings(bone, track_y, track_x, yy_mm, xx_mm, (sy, sx), hd, outline.ring_gap_mm)
    bone &= ~enhanced_vessels(crop, canon.spacing_mm, yy_mm, xx_mm, track_y, track_x, hd, outline)
    bone &= ~front
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
    # split at the discs: which side of each plane, and carve each disc out
    yy, xx = yy_mm[None, :, None], xx_mm[None, None, :]
    seg_index = np.zeros(bone.shape, np.int16)
    zz32, yy32, xx32 = (np.asarray(a, np.float32) for a in (zz[:, None, None], yy, xx))
    window_mm = 12.0 + 2.5 * hd + 5.0  # the planes matter near the body only (markers, carving)
    for point, nrm in spine.disc_planes:
        k0 = int(np.searchsorted(zz, point[0] - window_mm))
        k1 = int(np.searchsorted(zz, point[0] + window_mm))
        seg_index[k1:] += 1
        p32, n32 = point.astype(np.float32), nrm.astype(np.float32)
        near = (zz32[k0:k1] - p32[0]) * n32[0] + (yy32 - p32[1]) * n32[1] + (xx32 - p32[2]) * n32[2]
        seg_index[k0:k1] += (near > 0).astype(np.int16)
        carve_disc(bone[k0:k1], crop[k0:k1], near, zz[k0:k1], yy, xx, point, nrm, hd, outline)
    by_ordinal = {s.ordinal: s for s in spine.segments}
    dx = xx - track_x[:, None, None]
    lateral = np.abs(dx)
    radial = np.hypot(yy - track_y[:, None, None], lateral)
    # the body region (around the track, in front of the pedicles) is labelled by the disc planes;
    # the posterior elements then grow from it through bone
    widths = [s.blob_width_mm for s in spine.segments if s.blob_width_mm]
    body_radius = float(np.clip(np.median(widths or [40.0]) / 2, 12, 28))
    in_front = (yy - track_y[:, None, None]) <= 0.5 * body_radius
    body_zone = bone & (radial <= body_radius) & in_front
    markers = np.zeros(bone.shape, np.int32)
    for o in by_ordinal:
        markers[body_zone & (seg_index == o)] = o + 1
    if spine.sacrum_at_bottom and spine.disc_planes and 0 in by_ordinal:
        # the sacrum below S1's top curves back out of the tracked column: all midline bone well
        # below the lumbosacral disc is sacral (it must not be grown into from L5)
        below = (zz < spine.disc_planes[0][0][0] - 10.0)[:, None, None] & (lateral <= 35.0)
        markers[bone & below & (seg_index == 0)] = 1
    # ribs and iliac bones: bone beyond the lateral limit that runs on well past it
    foreign = all_bone & (lateral > growth.lateral_mm)
    flab, nf = ndi.label(foreign)
    far = np.zeros(nf + 1, bool)
    rib_like = np.zeros(nf + 1, bool)
    if nf:
        far[np.unique(flab[foreign & (lateral > growth.lateral_mm + growth.foreign_margin_mm)])] = True
        far[0] = False
        markers[far[flab]] = FOREIGN + flab[far[flab]]
        # a rib is a thin bar; thicker bone (or an organ bright with contrast) bears no vertebra's rib
        depth = ndi.distance_transform_edt(foreign, sampling=canon.spacing_mm)
        radius = np.zeros(nf + 1)
        radius[1:] = ndi.maximum(depth, flab, np.arange(1, nf + 1))
        rib_like = far & (radius <= growth.rib_max_radius_mm)
    # each bone voxel joins the body it reaches most cheaply through bone; dim voxels (joint
    # spaces, gaps between neighbouring arches) cost more to cross than dense cortex
    dim = np.clip((growth.arch_hu - crop.astype(np.float32)) / max(growth.arch_hu - outline.label_low_hu, 1.0), 0.0, 1.0)
    weight = np.where(bone | far[flab], 1.0 + growth.dim_cost * dim, np.inf)
    grown, cost = geodesic_grow(
        markers, weight, canon.spacing_mm, up_factor=growth.up_factor, free_label=1 if spine.sacrum_at_bottom else 0
    )
    grown[cost > growth.max_path_cost] = 0
    box = (slice(z0, z1), slice(y0, y1), slice(x0, x1))
    behind = (yy - track_y[:, None, None]) >= -0.5 * hd_z[:, None, None]  # rib heads and necks lie here
    return Grown(grown, open_holes, crop, box, lateral, dx, by_ordinal, behind, seg_index, rib_like)


def rib_heads(g: Grown, spacing: SpacingZYX, sacral_ordinal: int | None, opts: GrowthOptions) -> None:
    """Which vertebrae bear ribs, per side, recorded on the segments (``rib_sides``, ``rib_contact_mm3``,
    ``rib_beside_mm3``).

    A rib belongs to the vertebra its head articulates with: the grown rib bone near the spine
    (within ``rib_head_zone_mm`` of the centre line, beside or behind the body's centre) falls into
    pieces, one per rib and side; each piece's most medial part is its head, and the vertebra that
    head articulates with bears it (``rib_head_ordinal``). (Touching anywhere is not enough: the first
    rib runs up past C7's transverse process, the twelfth down past L1's.) Bone near the sacral vertebra, or reaching the
    bottom of the box, is pelvis, and thick bone (or an organ bright with contrast) is no rib
    either. Patient right: dx < 0."""
    grown = g.labels
    sz, sy, sx = spacing
    voxel_mm3 = sz * sy * sx
    foreign = np.where(grown >= FOREIGN, grown, 0)
    pelvis: set[int] = set()
    if sacral_ordinal is not None:
        size = tuple(2 * max(1, int(round(opts.rib_reach_mm / s))) + 1 for s in spacing)
        near = ndi.maximum_filter(foreign, size=size)
        pelvis = {int(c) for c in np.unique(near[grown == sacral_ordinal + 1]) if c}
        bottom = foreign[: max(1, grown.shape[0] // 20)]
        pelvis |= {int(c) for c in np.unique(bottom[bottom > 0])}
    rib_bone = (foreign > 0) & g.rib_like[np.where(foreign > 0, foreign - FOREIGN, 0)]
    if pelvis:
        rib_bone &= ~np.isin(foreign, list(pelvis))
    rib_per_slice = rib_bone.sum(axis=(1, 2)) * voxel_mm3
    lateral = np.broadcast_to(g.lateral_mm, grown.shape)
    left = np.broadcast_to(g.dx_mm, grown.shape) >= 0
    near_spine = rib_bone & (lateral <= opts.rib_head_zone_mm) & np.broadcast_to(g.rib_zone, grown.shape)
    heads: dict[int, dict[str, float]] = {}
    for side, mask in (("right", near_spine & ~left), ("left", near_spine & left)):
        pieces, n = ndi.label(mask)
        for i, box in enumerate(ndi.find_objects(pieces), start=1):
            piece = pieces[box] == i
            volume = float(piece.sum()) * voxel_mm3
            if volume < opts.rib_min_contact_mm3:
                continue
            lat = lateral[box][piece]
            head = lat <= lat.min() + opts.rib_head_band_mm
            o = rib_head_ordinal(g, box, piece, head, spacing, opts)
            heads.setdefault(o, {}).setdefault(side, 0.0)
            heads[o][side] += volume
    for o, seg in g.by_ordinal.items():
        ks = np.flatnonzero((grown == o + 1).any(axis=(1, 2)))
        seg.rib_beside_mm3 = float(rib_per_slice[ks].sum()) if ks.size else 0.0
        found = heads.get(o, {})
        seg.rib_contact_mm3 = float(sum(found.values()))
        seg.rib_sides = [side for side in ("right", "left") if side in found]


def rib_head_ordinal(
    g: Grown, box: tuple[slice, ...], piece: np.ndarray, head: np.ndarray, spacing: SpacingZYX, opts: GrowthOptions
) -> int:
    """The ordinal of the vertebra a rib's head articulates with. The head of rib N sits on the disc
    between vertebrae N-1 and N and meets both (ribs 1, 10-12 meet N alone), so it belongs to the lowest
    grown vertebra whose bone within ``rib_head_touch_mm`` of the head is at least ``rib_head_share``
    of the most-touched one's; where no vertebra is that near, to the gap between disc planes the head
    lies in."""
    idx = np.argwhere(piece)[head] + np.array([b.start for b in box])
    reach = np.array([max(1, int(round(opts.rib_head_touch_mm / s))) for s in spacing])
    lo = np.maximum(idx.min(axis=0) - reach, 0)
    hi = np.minimum(idx.max(axis=0) + reach + 1, g.labels.shape)
    window = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    seed = np.zeros(tuple(int(b - a) for a, b in zip(lo, hi, strict=True)), bool)
    seed[tuple((idx - lo).T)] = True
    near = ndi.binary_dilation(seed, structure=np.ones(tuple(2 * r + 1 for r in reach), bool))
    labels = g.labels[window][near]
    labels = labels[(labels > 0) & (labels < FOREIGN)]
    if labels.size:
        contact = np.bincount(labels.astype(np.int64))
        return int(np.flatnonzero(contact >= opts.rib_head_share * contact.max())[0]) - 1
    ordinals = g.seg_index[box][piece][head]
    return int(np.bincount(ordinals.astype(np.int64)).argmax())


def final_labels(
    g: Grown,
    ids: dict[str, int],
    spacing: SpacingZYX,
    outline: OutlineOptions,
    growth: GrowthOptions,
    spine: SpineSegments | None = None,
) -> np.ndarray:
    """VerSe ids in the box: ribs and pelvis, bone beyond the lateral limits, the canal and the
    partial-volume rim removed; marrow each vertebra encloses given back to it. The core of the
    spinal canal (``outline.canal_core_mm`` around its followed centre) is never vertebra, even
    where the canal's ring is open and nothing else marks it."""
    n = max(g.by_ordinal, default=0) + 2
    ordinal_id = np.zeros(n + 1, np.int32)
    for o, seg in g.by_ordinal.items():
        if seg.level in ids:
            ordinal_id[o + 1] = ids[seg.level]
    grown = g.labels.copy()
    grown[(grown >= FOREIGN) | (grown > n) | (g.lateral_mm > growth.lateral_mm)] = 0
    out = ordinal_id[grown].astype(np.int16)
    out[g.open_holes] = 0
    for seg in g.by_ordinal.values():
        if seg.level in ids and (seg.level.startswith("T") or seg.rib_sides):
            out[(out == ids[seg.level]) & (g.lateral_mm > growth.rib_lateral_mm)] = 0
    fill_enclosed_marrow(out)
    if spine is not None and spine.canal_yx_mm is not None and outline.canal_core_mm > 0:
        sz, sy, sx = spacing
        zz = (np.arange(g.box[0].start, g.box[0].stop) + 0.5) * sz
        ok = np.isfinite(spine.canal_yx_mm[:, 0])
        if ok.sum() >= 2:
            seen = (zz >= spine.track_z_mm[ok][0]) & (zz <= spine.track_z_mm[ok][-1])
            cy = np.interp(zz, spine.track_z_mm[ok], spine.canal_yx_mm[ok, 0])
            cx = np.interp(zz, spine.track_z_mm[ok], spine.canal_yx_mm[ok, 1])
            yy = (np.arange(g.box[1].start, g.box[1].stop) + 0.5) * sy
            xx = (np.arange(g.box[2].start, g.box[2].stop) + 0.5) * sx
            core = (
                (yy[None, :, None] - cy[:, None, None]) ** 2 + (xx[None, None, :] - cx[:, None, None]) ** 2
                <= outline.canal_core_mm**2
            ) & seen[:, None, None]
            out[core] = 0
    # the partial-volume rim: a surface voxel dimmer than ``rim_hu`` is mostly soft tissue
    fg = out > 0
    out[fg & ~ndi.binary_erosion(fg) & (g.crop_hu < outline.rim_hu)] = 0
    return out

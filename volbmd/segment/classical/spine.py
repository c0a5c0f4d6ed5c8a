"""The classical segmenter's stages in sequence: :func:`segment_spine` and its Segmenter wrapper."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from volbmd.errors import InputError
from volbmd.geometry import canonicalize, uncanonicalize
from volbmd.labels import level_rank, load_label_scheme
from volbmd.segment.classical.discs import centre_line, find_discs
from volbmd.segment.classical.growth import final_labels, grow_vertebrae, rib_heads
from volbmd.segment.classical.levels import assign_levels
from volbmd.segment.classical.localise import (
    bone_mask,
    find_canal,
    lung_beside,
    sacrum_at_bottom,
    track_bodies,
    working_grid,
)
from volbmd.segment.classical.options import ClassicalOptions, LocaliseOptions
from volbmd.segment.classical.quality import check_counts, check_segments
from volbmd.segment.classical.types import CentreLine, Disc, Segment, SpineSegments, SpineTrack, WorkGrid
from volbmd.volume import LabelMap, Volume

__all__ = ["ClassicalSegmenter", "ClassicalOptions", "SpineSegments", "Segment", "segment_spine", "locate_spine"]


def _as_options(options: ClassicalOptions | dict | None) -> ClassicalOptions:
    if options is None:
        return ClassicalOptions()
    if isinstance(options, ClassicalOptions):
        return options
    return ClassicalOptions.model_validate(options)


def _body_width_mm(bone: np.ndarray, work: WorkGrid, z_mm: float, yx_mm: np.ndarray) -> float:
    """Width (mm) of the bone run along x through the body centre at height ``z_mm``."""
    sz, sy, sx = work.spacing_mm
    k = min(bone.shape[0] - 1, max(0, int(z_mm / sz)))
    j = min(bone.shape[1] - 1, max(0, int(yx_mm[0] / sy)))
    i = min(bone.shape[2] - 1, max(0, int(yx_mm[1] / sx)))
    row = bone[k, j]
    if not row[i]:
        return 0.0
    lo = i
    while lo > 0 and row[lo - 1]:
        lo -= 1
    hi = i
    while hi < row.size - 1 and row[hi + 1]:
        hi += 1
    return (hi - lo + 1) * sx


def _segments(
    discs: list[Disc],
    line: CentreLine,
    track: SpineTrack,
    bone: np.ndarray,
    work: WorkGrid,
    min_mm: float,
    lung_opts: LocaliseOptions,
) -> list[Segment]:
    """One segment per gap between discs (and the ends of the line), bottom to top."""
    end = (len(line.points_mm) - 1) * line.step_mm
    arcs = [0.0] + [d.arc_mm for d in discs] + [end]
    segments = []
    t_lo, t_hi = line.tracked_arc_mm or (0.0, end)
    for o, (lo, hi) in enumerate(zip(arcs[:-1], arcs[1:])):
        complete = 0 < o < len(arcs) - 2
        if not complete and min(hi, t_hi) - max(lo, t_lo) < min_mm:
            continue  # an end piece with (almost) no tracked body in it
        i_lo, i_hi = int(round(lo / line.step_mm)), int(round(hi / line.step_mm))
        mid = line.points_mm[(i_lo + i_hi) // 2]
        seg = Segment(
            float(line.points_mm[i_lo, 0]),
            float(line.points_mm[i_hi, 0]),
            ordinal=o,
            arc_lo_mm=float(lo),
            arc_hi_mm=float(hi),
            complete=complete,
        )
        seg.blob_width_mm = _body_width_mm(bone, work, float(mid[0]), mid[1:])
        seg.lung_share = lung_beside(work.hu, work.spacing_mm, (seg.z_lo_mm, seg.z_hi_mm), mid[1:], lung_opts)
        segments.append(seg)
    return segments


def locate_spine(canon: Volume, opts: ClassicalOptions) -> tuple[SpineSegments, SpineTrack, CentreLine, dict]:
    """Stages 1–2 on a canonical CT: the vertebrae as segments between disc planes, not yet named."""
    work = working_grid(canon, opts.localise)
    canal = find_canal(work, opts.canal)
    bone = bone_mask(work.hu, opts.localise.bone_low_hu, opts.localise.bone_high_hu)
    track = track_bodies(work, bone, canal, opts.localise, opts.canal.min_length_mm, canon.source)
    # the sacrum never has lung beside it; a scan cut through the chest has its ribs joined to the
    # lowest vertebra in one blob as wide as a pelvis (chest CTs cut at T6–T9 were named L3–S1,
    # naming confidence 0.95, before this was asked)
    bottom_mm = (float(track.z_mm[0]), float(track.z_mm[0]) + opts.localise.lung_height_mm)
    lung = lung_beside(work.hu, work.spacing_mm, bottom_mm, track.body_yx_mm[0], opts.localise)
    sacrum = lung <= opts.localise.lung_max_share and sacrum_at_bottom(bone, work.hu, track, work.spacing_mm, opts.localise)
    extend = opts.localise.line_extend_mm
    # below S1 lie the sacral segments and their rudimentary discs: the line stops at the track
    line = centre_line(
        track,
        opts.discs.step_mm,
        opts.localise.smooth_mm,
        (0.0 if sacrum else extend, extend),
        (0.0, canon.shape[0] * canon.spacing_mm[0]),
    )
    discs, info = find_discs(canon.array, canon.spacing_mm, bone, work.spacing_mm, line, opts.discs)
    segments = _segments(discs, line, track, bone, work, opts.discs.min_segment_mm, opts.localise)
    if not segments:
        raise InputError("no spine found: the tracked column holds no vertebra", canon.source)
    flags = []
    if track.k0 == 0:
        flags.append("partial_fov:inferior")
    if track.k1 == work.hu.shape[0] - 1:
        flags.append("partial_fov:superior")
    dz = float(np.median(np.diff(track.z_mm))) if len(track.z_mm) > 1 else 1.0
    smooth_yx = track.body_yx_mm.copy()
    if len(smooth_yx) > 2:
        smooth_yx = ndi.gaussian_filter1d(smooth_yx, sigma=max(0.5, opts.localise.smooth_mm / dz), axis=0, mode="nearest")
    spine = SpineSegments(track.z_mm, smooth_yx, [float(d.point_mm[0]) for d in discs], segments, flags)
    spine.disc_planes = [(d.point_mm, d.normal) for d in discs]
    spine.body_half_depth_mm = float(np.median(track.half_depth_mm))
    spine.track_half_depth_mm = track.half_depth_mm
    followed = track.canal_yx_mm.copy()
    outside = np.ones(len(followed), bool)
    outside[track.canal_range[0] : track.canal_range[1] + 1] = False
    followed[outside] = np.nan
    spine.canal_yx_mm = followed
    spine.sacrum_at_bottom = sacrum
    spine.lung_at_bottom = lung > opts.localise.lung_max_share
    info = dict(
        info,
        canal_length_mm=canal.length_mm,
        disc_scores={o + 1: d.score for o, d in enumerate(discs)},
        disc_alternatives={o + 1: (d.margin, d.alternative_mm) for o, d in enumerate(discs)},
        canal_z_mm=(float(track.z_mm[track.canal_range[0]]), float(track.z_mm[track.canal_range[1]])),
    )
    return spine, track, line, info


def segment_spine(volume: Volume, options: ClassicalOptions | dict | None = None) -> LabelMap:
    """Find, split and name the vertebrae of a CT. Returns VerSe ids on the volume's own grid.

    ``metadata``: ``flags`` (landmarks, partial field of view, transitional anatomy),
    ``segments`` (per vertebra: extent, rib sides, level, confidence, quality flags), ``naming``
    (how the levels were named and how sure), ``level_quality`` (level → confidence and
    ``implausible:…`` flags), ``whole_vertebrae`` (True: each label holds its arch, so the
    measurement always splits off the body).
    """
    opts = _as_options(options)
    if volume.metadata.get("modality") not in (None, "CT"):
        raise InputError(f"the classical segmenter needs CT, got {volume.metadata.get('modality')}", volume.source)
    canon, reo = canonicalize(volume, copy=False)
    spine, track, line, info = locate_spine(canon, opts)
    grown = grow_vertebrae(canon, spine, opts.outline, opts.growth)
    rib_heads(grown, canon.spacing_mm, spine.segments[0].ordinal if spine.sacrum_at_bottom else None, opts.growth)
    assign_levels(spine, opts.levels)
    verse = load_label_scheme("verse")
    out_box = final_labels(grown, verse, canon.spacing_mm, opts.outline, opts.growth, spine)
    voxel_ml = float(np.prod(canon.spacing_mm)) / 1000.0
    counts = np.bincount(out_box.ravel(), minlength=max(verse.values()) + 1)
    for seg in spine.segments:
        seg.volume_ml = float(counts[verse[seg.level]]) * voxel_ml if seg.level in verse else 0.0
    z_canal = info["canal_z_mm"]
    seen = [
        min(s.z_hi_mm, z_canal[1]) - max(s.z_lo_mm, z_canal[0]) >= 0.3 * max(s.z_hi_mm - s.z_lo_mm, 1e-6)
        for s in spine.segments
    ]
    check_segments(spine.segments, info["disc_scores"], seen, opts.quality, info["disc_alternatives"])
    check_counts(spine.segments, spine.naming)
    full = np.zeros(canon.shape, np.int16)
    full[grown.box] = out_box
    present = {s.level: verse[s.level] for s in spine.segments if s.level in verse and s.volume_ml > 0}
    quality = {
        s.level: {"confidence": s.confidence, "flags": list(s.quality_flags)} for s in spine.segments if s.level in present
    }
    labels_canon = LabelMap(
        array=full,
        spacing_mm=canon.spacing_mm,
        origin_lps_mm=canon.origin_lps_mm,
        direction_lps=canon.direction_lps,
        labels=dict(sorted(present.items(), key=lambda kv: level_rank(kv[0]))),
        metadata={
            "flags": list(spine.flags),
            "segments": [dataclasses.asdict(s) for s in spine.segments],
            "naming": spine.naming,
            "level_quality": quality,
            "whole_vertebrae": True,
        },
        source="classical segmentation",
    )
    return uncanonicalize(labels_canon, reo)


class ClassicalSegmenter:
    """Segmenter protocol wrapper of :func:`segment_spine` with its options."""

    name = "classical"

    def __init__(self, options: ClassicalOptions | dict | None = None, **sections: Any):
        base = _as_options(options)
        self.options = base if not sections else ClassicalOptions.model_validate({**base.model_dump(), **sections})

    def segment(self, volume: Volume) -> LabelMap:
        return segment_spine(volume, self.options)

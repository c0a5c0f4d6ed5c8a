"""Vertebral marrow PDFF per level: each level's mask with its cortex stripped (the same Numba kernel
as CT), statistics of the PDFF inside, and flags for fat–water swaps."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field

from volbmd.volume import LabelMap

__all__ = ["LevelPdff", "level_pdff", "swap_flags", "apply_bmd_model"]

#: Adjacent levels' median PDFF differing by more than this (percentage points) suggests a swap.
JUMP_POINTS = 25.0
#: A level whose voxels sit this far (points) from its median ...
SPLIT_POINTS = 40.0
#: ... in more than this share of its voxels holds two populations: a partial swap.
SPLIT_SHARE = 0.2
#: An interquartile range wider than this (points) also means two populations (about half swapped).
SPLIT_IQR_POINTS = 30.0
#: Slices of one body whose medians differ by more than :data:`JUMP_POINTS` flip (a slice-wise
#: swap), counted only for slices holding at least this many ROI voxels.
MIN_SLICE_VOXELS = 20


class LevelPdff(BaseModel):
    level: str
    n_voxels: int = Field(description="voxels of the marrow ROI with a PDFF")
    roi_volume_ml: float
    body_split: str = Field("", description="how the body was taken from the mask: split | body_only | too_thin")
    pdff_percent: float | None = Field(None, description="the level's PDFF: the median over its marrow ROI")
    pdff_mean_percent: float | None = None
    pdff_median_percent: float | None = None
    pdff_sd_percent: float | None = None
    pdff_p5_percent: float | None = None
    pdff_p95_percent: float | None = None
    pdff_iqr_percent: float | None = Field(None, description="interquartile range, percentage points")
    split_share: float | None = Field(None, description=f"share of voxels > {SPLIT_POINTS:g} points from the median")
    bmd_estimate_mg_cm3: float | None = Field(None, description="BMD estimated from the median PDFF (--bmd-model)")
    bmd_estimate_sd_mg_cm3: float | None = Field(None, description="SD of that estimate, as a prediction")
    bmd_estimate_label: str | None = None
    flags: list[str] = []


def level_pdff(
    pdff_percent: np.ndarray, labels: LabelMap, *, cortical_depth_mm: float = 2.0, body_only: bool | None = None
) -> list[LevelPdff]:
    """PDFF statistics of each labelled level's marrow, cranial to caudal: the vertebral body split
    off a whole-vertebra mask (as for CT: :func:`volbmd.vertebrae.vertebra_masks`) with its cortex
    stripped. ``pdff_percent``: an array on the labels' grid, NaN where not measured."""
    from volbmd.geometry import canonicalize
    from volbmd.vertebrae import vertebra_masks
    from volbmd_kernels.morphology import strip_cortex
    from volbmd_kernels.stats import value_statistics

    values = np.asarray(pdff_percent, np.float64)
    if values.shape != labels.shape:
        raise ValueError(f"PDFF of shape {values.shape} is not on the masks' grid {labels.shape}")
    canon_labels, reo = canonicalize(labels)
    canon_values = np.ascontiguousarray(reo.apply(values))
    out = []
    for vm in vertebra_masks(canon_labels, body_only=body_only):
        if vm.box is None or vm.body is None:
            continue
        core = strip_cortex(vm.body, canon_labels.spacing_mm, cortical_depth_mm)
        crop = canon_values[vm.box]
        inside = crop[core]
        inside = inside[np.isfinite(inside)]
        slice_medians = []
        for z in range(core.shape[0]):
            in_slice = crop[z][core[z]]
            in_slice = in_slice[np.isfinite(in_slice)]
            if in_slice.size >= MIN_SLICE_VOXELS:
                slice_medians.append(float(np.median(in_slice)))
        stats = value_statistics(inside)
        record = LevelPdff(
            level=vm.level,
            n_voxels=int(inside.size),
            roi_volume_ml=float(np.count_nonzero(core) * labels.voxel_volume_mm3 / 1000.0),
            body_split=vm.split_method,
        )
        if stats is None:
            record.flags.append("no_pdff")
        else:
            record.pdff_mean_percent = stats["mean"]
            record.pdff_median_percent = stats["median"]
            record.pdff_percent = stats["median"]
            record.pdff_sd_percent = stats["sd"]
            record.pdff_p5_percent = stats["p5"]
            record.pdff_p95_percent = stats["p95"]
            record.pdff_iqr_percent = stats["p75"] - stats["p25"]
            record.split_share = float(np.mean(np.abs(inside - stats["median"]) > SPLIT_POINTS))
            if len(slice_medians) > 1 and np.max(np.abs(np.diff(slice_medians))) > JUMP_POINTS:
                record.flags.append("possible_swap_slices")
        out.append(record)
    return swap_flags(out)


def swap_flags(levels: list[LevelPdff]) -> list[LevelPdff]:
    """Flag ``possible_swap_split`` (a level of two populations: many voxels far from its median,
    or a wide interquartile range) and ``possible_swap_jump`` (a level
    whose median differs from both measured neighbours', or its only one, by more than
    :data:`JUMP_POINTS`)."""
    medians = [lv.pdff_median_percent for lv in levels]
    for i, lv in enumerate(levels):
        wide = lv.pdff_iqr_percent is not None and lv.pdff_iqr_percent > SPLIT_IQR_POINTS
        if wide or (lv.split_share is not None and lv.split_share > SPLIT_SHARE):
            lv.flags.append("possible_swap_split")
        own = medians[i]
        if own is None:
            continue
        neighbours = [
            m for m in (medians[i - 1] if i > 0 else None, medians[i + 1] if i + 1 < len(levels) else None) if m is not None
        ]
        if neighbours and all(abs(own - m) > JUMP_POINTS for m in neighbours):
            lv.flags.append("possible_swap_jump")
    return levels


def apply_bmd_model(levels: list[LevelPdff], model) -> list[LevelPdff]:
    """Add each level's BMD estimate from its median PDFF (a :class:`~volbmd.mri.bmd_model.PdffBmdModel`);
    ``bmd_estimate_extrapolated`` flags a PDFF outside the range the model was fitted on."""
    for lv in levels:
        if lv.pdff_median_percent is None:
            continue
        estimate, sd, outside = model.predict(lv.pdff_median_percent)
        lv.bmd_estimate_mg_cm3, lv.bmd_estimate_sd_mg_cm3, lv.bmd_estimate_label = estimate, sd, model.label
        if outside:
            lv.flags.append("bmd_estimate_extrapolated")
    return levels

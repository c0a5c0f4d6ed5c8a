"""Trabecular measurement per vertebral body: cortical stripping, ROI, HU statistics, heights.

All size rules are in mm or mm³, never voxel counts. Inputs are in the canonical LPS frame
(see :func:`volbmd.geometry.canonicalize`); :func:`measure_vertebrae` canonicalises for you.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage as ndi

from volbmd.config import MeasurementConfig, PipelineConfig, default_config
from volbmd.geometry import canonicalize
from volbmd.labels import level_rank
from volbmd.types import SpacingZYX
from volbmd.vertebrae import VertebraMask, vertebra_masks
from volbmd.volume import LabelMap, Volume
from volbmd_kernels.morphology import strip_cortex
from volbmd_kernels.stats import masked_values, value_statistics

__all__ = [
    "LevelMeasurement",
    "MeasurementResult",
    "choose_cortical_depth_mm",
    "body_axes",
    "body_heights_mm",
    "height_axes",
    "spine_axes",
    "genant_grade",
    "trabecular_roi",
    "roi_end_weights",
    "dense_foci",
    "measure_vertebrae",
    "PEER_EROSION_MM",
    "LevelMasks",
]

#: TotalSegmentator's spine report erodes bodies by 4 mm (SCIENCE §2): the floor of the auto depth.
PEER_EROSION_MM = 4.0
#: Heights are read at these fractions of the body's anteroposterior depth (TotalSegmentator uses
#: 15/50/85 %).
HEIGHT_POSITIONS = {"anterior": 0.15, "middle": 0.50, "posterior": 0.85}
#: The body's own SI axis is its flattest principal axis among those at most this far from z.
MAX_AXIS_TILT_DEG = 50.0
#: Levels whose height is not a vertebral body height (no Genant grade).
NO_GENANT_LEVELS = frozenset({"S1"})


@dataclass
class LevelMeasurement:
    level: str
    label_id: int
    flags: list[str] = field(default_factory=list)
    split_method: str = "empty"
    body_volume_ml: float | None = None
    body_n_voxels: int = 0
    roi: str | None = None
    roi_volume_ml: float | None = None
    roi_ends_weighted: tuple[str, ...] = ()
    dense_focus_ml: float | None = None  # focal dense bone left out of the ROI (None: none found)
    endplate_excluded_ml: float | None = None  # a cupped endplate and the cup's contents left out
    trabecular_n_voxels: int = 0
    trabecular_hu_mean: float | None = None
    trabecular_hu_median: float | None = None
    trabecular_hu_sd: float | None = None
    trabecular_hu_p5: float | None = None
    trabecular_hu_p25: float | None = None
    trabecular_hu_p75: float | None = None
    trabecular_hu_p95: float | None = None
    heights_mm: dict[str, float | None] = field(
        default_factory=lambda: {"anterior": None, "middle": None, "posterior": None}
    )
    height_loss: float | None = None
    genant_grade: int | None = None
    centroid_lps_mm: list[float] | None = None
    si_axis_tilt_deg: float | None = None
    segmentation_confidence: float | None = None  # 0–1, from the segmenter's own checks (None: not given)
    #: how far the trabecular mean moves when the ROI loses its outer voxel layer (a mask boundary
    #: that shifts by a voxel moves the mean about this much)
    trabecular_hu_boundary_shift: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LevelMasks:
    """A level's body and ROI as boolean crops of the canonical volume at ``box``."""

    box: tuple[slice, slice, slice]
    body: np.ndarray
    roi: np.ndarray


@dataclass
class MeasurementResult:
    levels: list[LevelMeasurement]
    cortical_depth_mm: float
    cortical_depth_rule: str
    roi: str
    warnings: list[str] = field(default_factory=list)
    masks: dict[str, LevelMasks] = field(default_factory=dict)  # canonical frame, filled on request

    def mask_volumes(self, canonical_shape, dtype=np.uint8) -> tuple[np.ndarray, np.ndarray]:
        """Full canonical label arrays of the bodies and the ROIs (value = level's label id)."""
        bodies = np.zeros(canonical_shape, dtype)
        rois = np.zeros(canonical_shape, dtype)
        ids = {m.level: m.label_id for m in self.levels}
        for level, lm in self.masks.items():
            bodies[lm.box][lm.body] = ids[level]
            rois[lm.box][lm.roi] = ids[level]
        return bodies, rois

    def by_level(self) -> dict[str, LevelMeasurement]:
        return {m.level: m for m in self.levels}


def choose_cortical_depth_mm(volume: Volume, config: MeasurementConfig) -> tuple[float, str]:
    """The stripping depth and the rule that chose it.

    ``auto`` = max(4 mm as in TotalSegmentator's spine report, the slice thickness, 2 in-plane
    voxels): thick slices mix cortex and endplates into edge voxels (SCIENCE §2).
    """
    if config.cortical_depth_mm != "auto":
        return float(config.cortical_depth_mm), "configured"
    thickness = float(volume.metadata.get("slice_thickness_mm") or volume.spacing_mm[0])
    candidates = {
        f"{PEER_EROSION_MM:g} mm floor": PEER_EROSION_MM,
        "slice thickness": thickness,
        "2 in-plane voxels": 2.0 * max(volume.spacing_mm[1], volume.spacing_mm[2]),
    }
    rule = max(candidates, key=lambda name: candidates[name])
    return float(candidates[rule]), f"auto: {rule}"


def _coords_mm(mask: np.ndarray, spacing_mm: SpacingZYX) -> np.ndarray:
    return np.argwhere(mask) * np.asarray(spacing_mm, dtype=np.float64)


def _wall_axis(body: np.ndarray, spacing_mm: SpacingZYX) -> np.ndarray | None:
    """SI direction from the posterior wall: lines fitted through each slice's posterior-most voxel
    (y) and left–right midpoint (x), against z. The posterior wall survives wedge fractures and
    follows lordotic tilt. None with fewer than 3 usable slices."""
    sz, sy, sx = (float(s) for s in spacing_mm)
    rows = np.flatnonzero(body.any(axis=(1, 2)))
    if rows.size < 5:
        return None
    zs, ys, xs = [], [], []
    for k in rows[1:-1]:  # endplate slices hold rims, not the wall
        sl = body[k]
        cols = np.flatnonzero(sl.any(axis=0))
        x_lo, x_hi = cols[0], cols[-1]
        centre = slice(int(x_lo + 0.35 * (x_hi - x_lo)), int(x_lo + 0.65 * (x_hi - x_lo)) + 1)
        band_rows = np.flatnonzero(sl[:, centre].any(axis=1))
        if band_rows.size == 0:
            continue
        zs.append(k * sz)
        ys.append(band_rows[-1] * sy)
        xs.append(0.5 * (x_lo + x_hi) * sx)
    if len(zs) < 3:
        return None
    b_y = np.polyfit(zs, ys, 1)[0]
    b_x = np.polyfit(zs, xs, 1)[0]
    u = np.array([1.0, b_y, b_x])
    return u / np.linalg.norm(u)


def _frame(u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    y_axis = np.array([0.0, 1.0, 0.0])
    v = y_axis - (y_axis @ u) * u
    v /= np.linalg.norm(v)
    w = np.cross(u, v)
    return u, v, w, float(np.degrees(np.arccos(np.clip(u[0], -1, 1))))


def _candidate_axes(body: np.ndarray, spacing_mm: SpacingZYX) -> list[np.ndarray]:
    cos_limit = np.cos(np.radians(MAX_AXIS_TILT_DEG))
    out = [np.array([1.0, 0.0, 0.0])]
    wall = _wall_axis(body, spacing_mm)
    if wall is not None and wall[0] >= cos_limit:
        out.append(wall)
    pts = _coords_mm(body, spacing_mm)
    if len(pts) >= 4:
        _, vecs = np.linalg.eigh(np.cov(pts.T))  # eigenvalues ascending: the flattest first
        for k in range(3):
            cand = vecs[:, k] if vecs[0, k] > 0 else -vecs[:, k]
            if cand[0] >= cos_limit:
                out.append(cand)
                break
    return out


def body_axes(body: np.ndarray, spacing_mm: SpacingZYX) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Unit vectors (in z, y, x mm space) of the body's own SI, AP and LR axes, and the SI tilt:
    the frame the trabecular ROI is built in.

    Candidates for SI: the scanner z, the posterior wall's direction (:func:`_wall_axis`; it
    survives wedge fractures and follows lordosis) and the body's flattest principal axis, each
    within :data:`MAX_AXIS_TILT_DEG` of z. Any tilt away from the true axis lengthens the middle
    height, so the candidate with the shortest middle height wins. AP is the scanner y (posterior +)
    made orthogonal to SI; LR completes the frame.
    """
    best, best_middle = None, np.inf
    for u in _candidate_axes(body, spacing_mm):
        frame = _frame(u)
        middle = _heights_along(body, spacing_mm, frame).get("middle")
        if middle is not None and middle < best_middle - 1e-6:
            best, best_middle = frame, middle
    return best if best is not None else _frame(np.array([1.0, 0.0, 0.0]))


Frame = tuple[np.ndarray, np.ndarray, np.ndarray, float]  # SI, AP, LR unit vectors and the SI tilt


def height_axes(
    body: np.ndarray, spacing_mm: SpacingZYX, spine_axis: np.ndarray | None = None, own: Frame | None = None
) -> Frame:
    """The frame the body's heights (and so its Genant grade) are read in: the body's own
    (:func:`body_axes`, or ``own`` when already found), unless the spine's direction through the
    neighbouring bodies (``spine_axis``, from :func:`spine_axes`) gives a middle height shorter by
    more than half a slice. Heights come in whole voxels, so a smaller gain is no evidence. In a
    kyphotic upper thoracic spine the body's own wall and principal axes can tilt the wrong way: the
    scanner axis, 28° off, cut the CTA's T3 anterior height to 12 of 22 mm (a false Genant 3).
    The ROI keeps the body's own frame (the spine's direction is a hint for heights only).
    """
    own = own if own is not None else body_axes(body, spacing_mm)
    if spine_axis is None or spine_axis[0] < np.cos(np.radians(MAX_AXIS_TILT_DEG)):
        return own
    along = _frame(spine_axis)
    middle = _heights_along(body, spacing_mm, along).get("middle")
    own_middle = _heights_along(body, spacing_mm, own).get("middle")
    if middle is not None and (own_middle is None or middle < own_middle - 0.5 * float(spacing_mm[0])):
        return along
    return own


#: Neighbouring bodies give the spine's direction only when their centres lie this far apart (mm).
SPINE_STEP_MM = (10.0, 60.0)


def spine_axes(masks: list[VertebraMask], spacing_mm: SpacingZYX) -> dict[str, np.ndarray]:
    """Per level: the spine's local direction (unit vector in z, y, x mm, pointing to +z) from the
    centre of the body above to the centre of the body below (or to its own centre at the ends of
    the list). Only adjacent levels count (T2 and T4 with T3 missing do not) and only at a
    plausible distance (:data:`SPINE_STEP_MM`). Used by :func:`height_axes`."""
    step = np.asarray(spacing_mm, dtype=np.float64)
    centres = {
        vm.level: (np.argwhere(vm.body).mean(axis=0) + [s.start for s in vm.box]) * step
        for vm in masks
        if vm.box is not None and vm.body is not None and vm.body.any()
    }
    ranks = {level: level_rank(level) for level in centres}
    out = {}
    for level, centre in centres.items():
        ends = [centres[n] for n in centres if abs(ranks[n] - ranks[level]) == 1]
        ends = [e for e in ends if SPINE_STEP_MM[0] <= np.linalg.norm(e - centre) <= SPINE_STEP_MM[1]]
        if not ends:
            continue
        pts = ends if len(ends) == 2 else [ends[0], centre]
        d = pts[1] - pts[0]
        d = d if d[0] >= 0 else -d
        norm = np.linalg.norm(d)
        if norm > 0:
            out[level] = d / norm
    return out


def _voxel_extent(axis: np.ndarray, spacing_mm: SpacingZYX) -> float:
    return float(np.sum(np.abs(axis) * np.asarray(spacing_mm)))


def body_heights_mm(body: np.ndarray, spacing_mm: SpacingZYX, axes=None) -> dict[str, float | None]:
    """Anterior, middle and posterior body heights in mm along the body's own SI axis (default:
    :func:`body_axes`).

    Heights are read in bands at 15/50/85 % of the anteroposterior depth (from the 2nd to the 98th
    percentile of the AP positions, :data:`DEPTH_QUANTILE_PCT`), in the central third left-to-right,
    as the SI extent of the band's voxels (plus one voxel's extent along the axis).
    """
    if body.sum() < 4:
        return {k: None for k in HEIGHT_POSITIONS}
    return _heights_along(body, spacing_mm, axes if axes is not None else body_axes(body, spacing_mm))


#: The body's front and back for its heights: these percentiles of its central third's AP positions.
DEPTH_QUANTILE_PCT = 2.0


def _heights_along(body: np.ndarray, spacing_mm: SpacingZYX, axes) -> dict[str, float | None]:
    out: dict[str, float | None] = {k: None for k in HEIGHT_POSITIONS}
    u, v, w, _ = axes
    pts = _coords_mm(body, spacing_mm)
    c = pts.mean(axis=0)
    pu, pv, pw = (pts - c) @ u, (pts - c) @ v, (pts - c) @ w
    central = np.abs(pw - 0.5 * (pw.max() + pw.min())) <= max(0.25 * (pw.max() - pw.min()), _voxel_extent(w, spacing_mm))
    if not central.any():
        return out
    # the body's front and back: a rim, an osteophyte or a tag of disc a few voxels strong in front
    # of the anterior cortex would otherwise move every band forward (the CTA's T12: its anterior
    # band fell into a lip up to 4.5 mm deep and read 13.5–22.5 mm on noise draws, the body 27 mm)
    v_lo, v_hi = np.percentile(pv[central], [DEPTH_QUANTILE_PCT, 100.0 - DEPTH_QUANTILE_PCT])
    depth = v_hi - v_lo
    half_band = max(1.5, 0.5 * _voxel_extent(v, spacing_mm))
    thickness = _voxel_extent(u, spacing_mm)
    for name, frac in HEIGHT_POSITIONS.items():
        sel = central & (np.abs(pv - (v_lo + frac * depth)) <= half_band)
        if sel.any():
            out[name] = float(pu[sel].max() - pu[sel].min() + thickness)
    return out


def genant_grade(heights_mm: dict[str, float | None]) -> tuple[int | None, float | None]:
    """Genant semi-quantitative grade from the height loss 1 − min/max of the body's heights.

    Grade 0: < 20 %; 1: 20 % to < 25 %; 2: 25 % to 40 %; 3: > 40 %. None with fewer than 2 heights.
    """
    values = [h for h in heights_mm.values() if h is not None and h > 0]
    if len(values) < 2:
        return None, None
    loss = 1.0 - min(values) / max(values)
    loss_pct = round(loss * 100.0, 9)  # keeps 20.0 % at 20.0 despite float rounding
    if loss_pct < 20.0:
        grade = 0
    elif loss_pct < 25.0:
        grade = 1
    elif loss_pct <= 40.0:
        grade = 2
    else:
        grade = 3
    return grade, float(loss)


def trabecular_roi(
    body: np.ndarray, spacing_mm: SpacingZYX, depth_mm: float, kind: str, slab_thickness_mm: float = 9.0, axes=None
) -> np.ndarray:
    """The trabecular ROI of one body crop.

    ``eroded_body``: the voxels farther than ``depth_mm`` from the body surface.
    ``mid_slab_ellipse``: of those, a slab ``slab_thickness_mm`` thick at mid-height (along the
    body's own SI axis) and inside an ellipse in the anterior body: centred at 40 % of the AP depth,
    semi-axes 25 % of the depth and 30 % of the width, clear of the posterior third where the
    basivertebral vein runs.
    """
    core = strip_cortex(body, spacing_mm, depth_mm)
    if kind == "eroded_body" or not core.any():
        return core
    if kind != "mid_slab_ellipse":
        raise ValueError(f"unknown ROI kind {kind!r}")
    u, v, w, _ = axes if axes is not None else body_axes(body, spacing_mm)
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    pts = _coords_mm(body, spacing_mm)
    c = pts.mean(axis=0)
    pu, pv, pw = (pts - c) @ u, (pts - c) @ v, (pts - c) @ w
    u_mid = 0.5 * (pu.max() + pu.min())
    in_slab = np.abs(pu - u_mid) <= 0.5 * slab_thickness_mm
    if not in_slab.any():
        return np.zeros_like(core)
    v_lo, v_hi = pv[in_slab].min(), pv[in_slab].max()
    w_lo, w_hi = pw[in_slab].min(), pw[in_slab].max()
    depth, width = v_hi - v_lo, w_hi - w_lo
    v_c, w_c = v_lo + 0.40 * depth, 0.5 * (w_lo + w_hi)
    a_v, a_w = max(0.25 * depth, 1e-6), max(0.30 * width, 1e-6)
    grid = np.indices(body.shape).reshape(3, -1).T * spacing - c
    gu, gv, gw = grid @ u, grid @ v, grid @ w
    keep = (np.abs(gu - u_mid) <= 0.5 * slab_thickness_mm) & (((gv - v_c) / a_v) ** 2 + ((gw - w_c) / a_w) ** 2 <= 1.0)
    return core & keep.reshape(body.shape)


def roi_end_weights(
    roi: np.ndarray, hu: np.ndarray, spacing_mm: SpacingZYX, si_axis: np.ndarray, guard_hu: float
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Per ROI voxel, how much it counts (0–1): the end slabs that are not marrow — an endplate
    (bright) or a disc (dark) that the body mask took in beyond its own endplate — count less or
    not at all.

    Along the body's own SI axis the ROI is cut into slabs one voxel thick. The marrow's level is
    the median slab mean of the middle third of the ROI's height, which always counts fully (a
    third, not a half: a mask that runs a whole disc and more past one endplate puts that endplate
    inside the middle half, as on a noise draw of a CTA's T8). From there outwards, a slab whose
    mean departs from that level by up to ``guard_hu`` (beyond twice its standard error, from the
    middle third's SD, so that a small slab is not judged by its noise) counts fully, by twice that
    not at all, and linearly in between; no slab counts more than the one inside it. Where the
    body mask ends at its endplates, the stripped cortex already keeps them out and every weight
    is 1; where it ends a few mm beyond (a disc plane placed into the disc or the neighbour's
    endplate, which a noise draw may decide), the plate or the disc would otherwise enter the mean.
    The ramp, rather than a cut, keeps the mean a continuous function of the scan: a slab near the
    limit moves the result a little on a noise draw, never a whole slab's worth.

    Returns float32 weights in ``roi``'s shape (0 outside it) and the ends whose weights fell
    below 1 ("inferior", "superior").
    """
    weights = roi.astype(np.float32)
    if guard_hu <= 0 or not roi.any():
        return weights, ()
    idx = np.nonzero(roi)
    values = hu[idx].astype(np.float64)
    u_mm = (np.column_stack(idx) * np.asarray(spacing_mm, np.float64)) @ np.asarray(si_axis, np.float64)
    step = _voxel_extent(np.asarray(si_axis, np.float64), spacing_mm)
    slab = np.floor((u_mm - u_mm.min()) / step).astype(np.int64)
    n_slabs = int(slab.max()) + 1
    if n_slabs < 3:
        return weights, ()
    counts = np.bincount(slab, minlength=n_slabs)
    sums = np.bincount(slab, weights=values, minlength=n_slabs)
    means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    centre = np.arange(n_slabs) + 0.5  # the middle third: slabs centred within it (the middle one of 3)
    middle = np.flatnonzero((centre >= n_slabs / 3.0) & (centre <= 2.0 * n_slabs / 3.0))
    lo_mid, hi_mid = int(middle[0]), int(middle[-1])
    level = float(np.nanmedian(means[lo_mid : hi_mid + 1]))
    marrow_sd = float(values[(slab >= lo_mid) & (slab <= hi_mid)].std())  # noise and texture, not the plates
    se = marrow_sd / np.sqrt(np.maximum(counts, 1))
    excess = np.maximum(np.abs(means - level) - 2.0 * se, 0.0)
    slab_w = np.clip(2.0 - excess / guard_hu, 0.0, 1.0)
    slab_w[~np.isfinite(slab_w)] = 1.0  # empty slabs (a gap in a tilted ROI) weigh nothing anyway
    slab_w[lo_mid : hi_mid + 1] = 1.0
    for k in range(lo_mid - 1, -1, -1):  # outwards: no slab counts more than the one inside it
        slab_w[k] = min(slab_w[k], slab_w[k + 1])
    for k in range(hi_mid + 1, n_slabs):
        slab_w[k] = min(slab_w[k], slab_w[k - 1])
    weights[idx] = slab_w[slab]
    ends = []
    low_end, high_end = ("inferior", "superior") if si_axis[0] >= 0 else ("superior", "inferior")
    if slab_w[0] < 1.0:  # the axis coordinate grows towards the head (+z) when si_axis[0] >= 0
        ends.append(low_end)
    if slab_w[-1] < 1.0:
        ends.append(high_end)
    return weights, tuple(sorted(ends))


#: the smoothing (Gaussian SD, mm) under which a voxel is judged a dense focus: at sub-mm voxels a
#: single trabecula or noise never reaches the threshold
DENSE_FOCUS_SMOOTHING_MM = 1.0


def smoothed_hu(hu: np.ndarray, spacing_mm: SpacingZYX) -> np.ndarray:
    """``hu`` under a Gaussian of ``DENSE_FOCUS_SMOOTHING_MM`` (float32): what the dense-focus and
    cupped-endplate rules judge."""
    sigma = [DENSE_FOCUS_SMOOTHING_MM / float(s) for s in spacing_mm]
    return ndi.gaussian_filter(np.asarray(hu, np.float32), sigma)


def dense_foci(
    roi: np.ndarray, hu: np.ndarray, spacing_mm: SpacingZYX, above_hu: float, smooth: np.ndarray | None = None
) -> np.ndarray:
    """The ROI voxels of focal dense bone — a bone island (enostosis), a sclerotic focus, cement, a
    calcification — and the voxels next to them, which partial volume brightens.

    A focus is where the ROI's values, smoothed over ``DENSE_FOCUS_SMOOTHING_MM``, lie more than
    ``above_hu`` above their median; it extends over the connected voxels more than half that far
    above (its own partial-volume edge), and then by one voxel. Clinical QCT places its VOI clear
    of such foci; a bone island of seven 3 mm voxels at 560–770 HU in 97 HU marrow otherwise
    raises the level's mean by 17 HU, and by more or less as the ROI's edge moves across it with
    noise. All False when ``above_hu`` is 0 or the ROI is empty. ``smooth``: :func:`smoothed_hu` of
    ``hu`` where the caller has it already."""
    if above_hu <= 0 or not roi.any():
        return np.zeros(roi.shape, bool)
    smooth = smoothed_hu(hu, spacing_mm) if smooth is None else smooth
    level = float(np.median(smooth[roi]))
    seeds = roi & (smooth > level + above_hu)
    if not seeds.any():
        return seeds
    cube = np.ones((3, 3, 3), bool)
    parts, _ = ndi.label(roi & (smooth > level + 0.5 * above_hu), structure=cube)
    focus = np.isin(parts, np.unique(parts[seeds]))
    return ndi.binary_dilation(focus, structure=cube) & roi


#: How far a cupped endplate reaches into the ROI from its end, as a share of the ROI's height: up to
#: the first value it is left in (a flat plate in the end slabs is the end guard's), from the second
#: on it is left out whole, and in between in proportion — a ramp, so that an apex near the limit
#: moves the mean a little between two noise draws, never by the whole cup.
ENDPLATE_REACH_SHARE = (0.2, 0.35)
#: and how large it is (mm³), the same way: noise or texture above the limit reaches 50–250 mm³ on
#: the development CTs at σ = 15 HU; the cupped endplate of the CTA's T11 700–890 mm³.
ENDPLATE_SIZE_MM3 = (300.0, 600.0)
#: beyond the ROI's outer fifth the plate lies at least this far inside the ROI (not along its side:
#: the cortex of a wall the ROI runs close to)
ENDPLATE_INNER_MM = 5.0


def _ramp(value: float, limits: tuple[float, float]) -> float:
    lo, hi = limits
    return float(np.clip((value - lo) / (hi - lo), 0.0, 1.0))


def endplate_intrusion(
    roi: np.ndarray,
    hu: np.ndarray,
    spacing_mm: SpacingZYX,
    si_axis: np.ndarray,
    above_hu: float,
    smooth: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """The ROI voxels beyond an endplate that dips into the body — a cupped (concave) endplate, as in
    the biconcave "codfish" vertebrae of osteoporosis, or a Schmorl's node — with the plate itself,
    and how surely they are that (0–1: the share of their weight to take away).

    The plate is where the ROI's values, smoothed over ``DENSE_FOCUS_SMOOTHING_MM``, lie more than
    ``above_hu`` above their median: a connected piece of it that starts in an end slab of the ROI
    (along the body's SI axis, one voxel thick) and reaches into it by a share of the ROI's height
    (``ENDPLATE_REACH_SHARE``), lying ``ENDPLATE_INNER_MM`` inside the ROI beyond its outer fifth,
    of a size (``ENDPLATE_SIZE_MM3``). A bone island in the middle does not start at an end
    (``dense_foci`` takes it); a flat endplate left in an end slab does not reach in
    (``roi_end_weights`` weighs those slabs); a cupped one does, and the disc tissue inside the cup
    lies in the body's mask, which a flat disc plane cuts. Returned: that piece with its neighbours
    (partial volume) and whatever of the ROI they cut off from its largest remaining part (the
    cup's contents), and the product of the reach's and the size's ramps for the surest piece.
    Nothing (all False, 0) when ``above_hu`` is 0, the ROI is empty or no plate reaches in.
    ``smooth``: :func:`smoothed_hu` of ``hu`` where the caller has it already."""
    none = np.zeros(roi.shape, bool)
    if above_hu <= 0 or not roi.any():
        return none, 0.0
    smooth = smoothed_hu(hu, spacing_mm) if smooth is None else smooth
    plate = roi & (smooth > float(np.median(smooth[roi])) + above_hu)
    if not plate.any():
        return none, 0.0
    u_mm = np.tensordot(np.asarray(spacing_mm, np.float64) * si_axis, np.indices(roi.shape, dtype=np.float64), axes=1)
    lo, hi = float(u_mm[roi].min()), float(u_mm[roi].max())
    height = hi - lo
    step = _voxel_extent(np.asarray(si_axis, np.float64), spacing_mm)
    if height <= 2 * step:
        return none, 0.0
    cube = np.ones((3, 3, 3), bool)
    parts, n = ndi.label(plate, structure=cube)
    index = np.arange(1, n + 1)
    u_min = np.asarray(ndi.minimum(u_mm, parts, index))
    u_max = np.asarray(ndi.maximum(u_mm, parts, index))
    from_low = u_min <= lo + step
    from_high = u_max >= hi - step
    reach = np.where(from_low, u_max - lo, np.where(from_high, hi - u_min, 0.0)) / height
    size_mm3 = np.bincount(parts.ravel(), minlength=n + 1)[1:] * float(np.prod(spacing_mm))
    sure = np.array([_ramp(r, ENDPLATE_REACH_SHARE) * _ramp(v, ENDPLATE_SIZE_MM3) for r, v in zip(reach, size_mm3)])
    if not (sure > 0).any():
        return none, 0.0
    depth = ndi.distance_transform_edt(roi, sampling=spacing_mm)
    beyond = (u_mm > lo + 0.2 * height) & (u_mm < hi - 0.2 * height)
    candidates = index[sure > 0]
    inner = np.asarray(ndi.maximum(np.where(beyond, depth, 0.0), parts, candidates)) >= ENDPLATE_INNER_MM
    intruding = candidates[inner]
    if intruding.size == 0:
        return none, 0.0
    out = ndi.binary_dilation(np.isin(parts, intruding), structure=cube) & roi
    rest, n_rest = ndi.label(roi & ~out, structure=ndi.generate_binary_structure(3, 1))
    if n_rest > 1:
        sizes = np.bincount(rest.ravel())[1:]
        out |= roi & (rest != 1 + int(np.argmax(sizes)))
    return out, float(sure[intruding - 1].max())


def _measure_level(
    vm: VertebraMask,
    volume: Volume,
    cfg: MeasurementConfig,
    depth_mm: float,
    masks: dict | None = None,
    spine_axis: np.ndarray | None = None,
) -> LevelMeasurement:
    m = LevelMeasurement(level=vm.level, label_id=vm.label_id, split_method=vm.split_method)
    if vm.box is None or vm.body is None:
        m.flags.append("empty_mask")
        return m
    spacing = volume.spacing_mm
    voxel_ml = volume.voxel_volume_mm3 / 1000.0
    body = vm.body
    m.body_n_voxels = int(body.sum())
    m.body_volume_ml = m.body_n_voxels * voxel_ml
    if vm.touches_edge:
        m.flags.append("cut_by_scan_edge:" + "+".join(vm.touches_edge))
    if vm.split_method == "too_thin":
        m.flags.append("body_split_failed")
    if m.body_volume_ml < cfg.min_body_volume_ml:
        m.flags.append("too_small")
    axes = body_axes(body, spacing)
    origin = np.array([s.start for s in vm.box], dtype=np.float64)
    centroid_idx = np.argwhere(body).mean(axis=0) + origin
    m.centroid_lps_mm = [float(v) for v in volume.geometry.index_to_world(centroid_idx)]
    m.si_axis_tilt_deg = axes[3]
    cut_in_z = any(side in ("inferior", "superior") for side in vm.touches_edge)
    if not cut_in_z:
        heights_frame = height_axes(body, spacing, spine_axis, own=axes)
        m.heights_mm = body_heights_mm(body, spacing, heights_frame)
        step_mm = _voxel_extent(heights_frame[0], spacing)
        if vm.level in NO_GENANT_LEVELS:
            pass
        elif step_mm > cfg.genant_max_voxel_mm:
            m.flags.append(f"genant_not_graded:voxel_{step_mm:.1f}mm_along_axis")
        else:
            m.genant_grade, m.height_loss = genant_grade(m.heights_mm)
    roi = trabecular_roi(body, spacing, depth_mm, cfg.roi, cfg.slab_thickness_mm, axes)
    weights, m.roi_ends_weighted = roi_end_weights(roi, volume.array[vm.box], spacing, axes[0], cfg.end_guard_hu)
    crop = volume.array[vm.box]
    smooth = smoothed_hu(crop, spacing) if cfg.dense_focus_hu > 0 or cfg.endplate_plate_hu > 0 else None
    focus = dense_foci(weights > 0, crop, spacing, cfg.dense_focus_hu, smooth)
    if focus.any():
        weights[focus] = 0.0
        m.dense_focus_ml = float(focus.sum()) * voxel_ml
        m.flags.append(f"dense_focus_excluded:{m.dense_focus_ml * 1000:.0f}_mm3")
    cup, sure = endplate_intrusion(weights > 0, crop, spacing, axes[0], cfg.endplate_plate_hu, smooth)
    if sure > 0:  # the cup's voxels weigh less by how surely they are one (see ENDPLATE_REACH_SHARE)
        weights[cup] *= 1.0 - sure
        m.endplate_excluded_ml = float(cup.sum()) * sure * voxel_ml
        m.flags.append(f"endplate_excluded:{m.endplate_excluded_ml * 1000:.0f}_mm3")
    roi = weights >= 0.5  # the ROI's mask: what the median, SD, percentiles and the saved masks use
    m.roi = cfg.roi
    if masks is not None:
        masks[vm.level] = LevelMasks(vm.box, body, roi)
    values = masked_values(volume.array[vm.box], roi)
    stats = value_statistics(values)
    m.trabecular_n_voxels = int(values.size)
    m.roi_volume_ml = values.size * voxel_ml
    if stats is None:
        m.flags.append("roi_empty")
        return m
    if m.roi_volume_ml < cfg.min_roi_volume_ml:
        m.flags.append("roi_too_small")
    m.trabecular_hu_mean = stats["mean"]
    if m.roi_ends_weighted or 0 < sure < 1:  # the mean that calibrates: every voxel by its weight (a focus weighs 0)
        soft = weights > 0
        w = weights[soft].astype(np.float64)
        m.trabecular_hu_mean = float(np.dot(w, volume.array[vm.box][soft].astype(np.float64)) / w.sum())
    m.trabecular_hu_median = stats["median"]
    m.trabecular_hu_sd = stats["sd"]
    for p in (5, 25, 75, 95):
        setattr(m, f"trabecular_hu_p{p}", stats[f"p{p}"])
    inner = ndi.binary_erosion(roi, structure=ndi.generate_binary_structure(3, 1))
    if inner.sum() >= 50:
        m.trabecular_hu_boundary_shift = float(
            abs(float(np.mean(masked_values(volume.array[vm.box], inner))) - stats["mean"])
        )
    lo, hi = cfg.plausible_trabecular_hu
    if not lo <= m.trabecular_hu_mean <= hi:
        # contrast-filled vessel or other tissue in the mask, a sclerotic lesion, or a wrong scale
        m.flags.append(f"implausible:trabecular_hu ({m.trabecular_hu_mean:.0f} HU, outside {lo:g} to {hi:g})")
    return m


#: A level's trabecular HU SD this many times the scan's typical level (the median over its levels)
#: means its ROI holds something other than marrow: cortex, an endplate, a sclerotic or metallic focus.
HIGH_SPREAD_RATIO = 1.8
HIGH_SPREAD_MIN_HU = 50.0


def _flag_high_spread(results: list[LevelMeasurement]) -> None:
    sds = [m.trabecular_hu_sd for m in results if m.trabecular_hu_sd is not None]
    if len(sds) < 3:
        return
    typical = float(np.median(sds))
    for m in results:
        sd = m.trabecular_hu_sd
        if sd is not None and sd > HIGH_SPREAD_MIN_HU and sd > HIGH_SPREAD_RATIO * typical:
            m.flags.append(f"high_hu_spread:{sd:.0f}_vs_{typical:.0f}_hu")


def measure_vertebrae(
    volume: Volume,
    labels: LabelMap,
    config: PipelineConfig | MeasurementConfig | None = None,
    *,
    levels=None,
    body_only: bool | None = None,
    keep_masks: bool = False,
) -> MeasurementResult:
    """Measure the trabecular bone of every labelled vertebral body.

    Args:
        volume: the CT in HU (any orientation; canonicalised here, voxels never resampled).
        labels: vertebra labels on the same grid, ``labels.labels`` naming the levels (whole
            vertebrae or bodies only).
        config: pipeline or measurement config (default: the shipped defaults).
        levels: levels to report (default all labelled). A requested level without voxels is
            listed with the flag ``empty_mask``, never dropped.
        body_only: True when the labels are bodies already; None decides per level.
        keep_masks: keep each level's body and ROI crops (``MeasurementResult.masks``).
    """
    if config is None:
        config = default_config()
    cfg = config.measurement if isinstance(config, PipelineConfig) else config
    labels.geometry.require_match(volume.geometry, "label map", labels.source)
    canon, _ = canonicalize(volume, copy=False)  # views: no copy of a large scan
    canon_labels, _ = canonicalize(labels, copy=False)
    depth_mm, rule = choose_cortical_depth_mm(canon, cfg)
    warnings = []
    thickness = float(canon.metadata.get("slice_thickness_mm") or canon.spacing_mm[0])
    if thickness >= cfg.thick_slice_mm:
        warnings.append(
            f"thick slices: {thickness:g} mm (flagged from {cfg.thick_slice_mm:g} mm); edge voxels mix cortex and"
            f" endplates, cortical depth {depth_mm:g} mm"
        )
    voxel_mm = min(canon.spacing_mm[1], canon.spacing_mm[2])
    if depth_mm < voxel_mm:
        warnings.append(
            f"cortical depth {depth_mm:g} mm is less than one voxel ({voxel_mm:.2g} mm in-plane): the trabecular ROI"
            f" keeps the cortical shell, which raises its HU"
        )
    if body_only is None and labels.metadata.get("whole_vertebrae"):
        body_only = False  # the segmenter says so: never mistake a vertebra with a thin arch for a body
    masks = vertebra_masks(canon_labels, levels=levels, body_only=body_only)
    kept: dict | None = {} if keep_masks else None
    spine = spine_axes(masks, canon.spacing_mm)
    results = [_measure_level(vm, canon, cfg, depth_mm, kept, spine.get(vm.level)) for vm in masks]
    _flag_high_spread(results)
    quality = labels.metadata.get("level_quality") or {}
    for m in results:  # the segmenter's own doubts about a level travel with its measurement
        q = quality.get(m.level) or {}
        m.flags.extend(f for f in q.get("flags", []) if f not in m.flags)
        m.segmentation_confidence = q.get("confidence")
    return MeasurementResult(results, depth_mm, rule, cfg.roi, warnings, kept or {})

"""Internal (phantomless) calibration from reference tissues inside the scan.

Reference tissues are found automatically in the canonical frame: air outside the body,
subcutaneous fat (a rim under the skin), paraspinal muscle (behind the vertebral bodies) and aortic
blood (in front of and left of the bodies; left out when contrast is present). Their measured HU
against nominal HU (configs: air −1000, fat −100, muscle 50, blood 40) gives the scanner's HU scale
``measured = gain · nominal + offset``; densities then follow from the corrected HU with a nominal
HA factor: ``ρ_HA = k · (HU − offset)/gain``. This is the simple two-or-more-point variant of
SCIENCE §4 (a line through air and soft-tissue references with assigned values).

Made for repeatability (the same scan with fresh noise gives the same line):

- each tissue's HU is the mean of voxels chosen on a smoothed copy of the scan (near the peak of
  the smoothed values: edges and other tissue left out): the choice barely changes with fresh
  noise, and a mean (unlike a mode, a median or a mean cut by an HU window on noisy values) does
  not move when noise widens a skewed distribution;
- the line is a weighted least-squares fit, each tissue weighted by ``1/(SE² + τ²)``: its
  statistical uncertainty SE (robust SD/√n) and how much that tissue's true HU varies between
  patients τ (fixed, in the config); so no tissue dominates because it has many voxels;
- blood never switches in or out at a threshold: its weight falls smoothly to 0 as the aorta
  reads from 60 to 90 HU (contrast arriving), and rises smoothly with the length of aorta found;
  a contrast agent recorded in DICOM sets it to 0;
- the fit's statistical covariance (of slope and intercept) goes with the calibration, so every
  BMD gets an uncertainty.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from volbmd.calibrate.base import Calibration, ScannerInfo, r_squared
from volbmd.calibrate.corrections import contrast_phase_from_aorta, kvp_factor
from volbmd.config import CalibrationConfig
from volbmd.geometry import block_factors, block_mean, canonicalize
from volbmd.slicewise import patient_mask
from volbmd.types import SpacingZYX
from volbmd.volume import LabelMap, Volume

__all__ = ["find_reference_tissues", "internal_calibration", "weighted_line", "MIN_TISSUE_VOXELS"]

MIN_TISSUE_VOXELS = 200
_WORK_MM = 2.0
_PADDING_HU = -1100.0  # values below this are outside the reconstruction circle, not air


def _body_mask(arr: np.ndarray) -> np.ndarray:
    """The patient: the largest connected object above −500 HU, holes filled per slice."""
    return patient_mask(arr, -500.0)


def _robust(values: np.ndarray, smoothed: np.ndarray | None = None) -> dict | None:
    """The tissue's HU: the mean of its voxels whose smoothed value lies near the peak of the
    smoothed values (within two robust SDs of their histogram's mode), so partial-volume voxels at
    the region's edges and other tissue are left out by a choice that fresh noise barely changes;
    a mean, unlike a mode or a median, does not move when noise widens a skewed distribution.
    With the voxel count, the robust SD (1.4826 · MAD, ``sd_hu``), the standard error of the mean
    (``se_hu``) and the interquartile range."""
    if values.size < MIN_TISSUE_VOXELS:
        return None
    v = np.asarray(values, np.float64)
    if smoothed is not None:
        sm = np.asarray(smoothed, np.float64)
        lo, hi = np.percentile(sm, [1, 99])
        if hi - lo >= 2.0:
            edges = np.arange(np.floor(lo) - 0.5, np.ceil(hi) + 1.5, 1.0)
            counts, _ = np.histogram(sm, bins=edges)
            peak = float(
                0.5 * (edges[:-1] + edges[1:])[int(np.argmax(ndi.gaussian_filter1d(counts.astype(np.float64), 3.0)))]
            )
            around = sm[np.abs(sm - peak) <= 50.0]  # the peak's own spread, not that of the edges
            width = max(10.0, 1.4826 * float(np.median(np.abs(around - peak))))
            near = np.abs(sm - peak) <= width
            if near.sum() >= MIN_TISSUE_VOXELS:
                v = v[near]
    spread = max(1.0, 1.4826 * float(np.median(np.abs(v - np.median(v)))))
    return {
        "hu": float(v.mean()),
        "n_voxels": int(v.size),
        "sd_hu": spread,
        "se_hu": spread / np.sqrt(v.size),
        "iqr_hu": float(np.subtract(*np.percentile(v, [75, 25]))),
    }


def find_reference_tissues(volume: Volume, labels: LabelMap | None = None) -> dict[str, dict]:
    """Median HU of air, subcutaneous fat, paraspinal muscle and aortic blood (when found).

    Muscle and blood are looked for relative to the vertebral bodies, so they need ``labels``.
    Each entry: ``{"hu", "n_voxels", "iqr_hu"}``; blood also gives ``contrast_phase``.
    """
    canon, _ = canonicalize(volume, copy=False)
    # work on a ~2 mm grid: tissue values are modes of large regions, and memory stays small
    factors = block_factors(canon.spacing_mm, _WORK_MM)
    arr = block_mean(canon.array, factors)
    # regions are chosen on a smoothed copy (fresh noise barely moves them), values read unsmoothed
    smooth = ndi.gaussian_filter(arr, 1.0)
    sz, sy, sx = (s * f for s, f in zip(canon.spacing_mm, factors))
    body = _body_mask(arr)
    found: dict[str, dict] = {}

    # air: outside the body, away from it by 10 mm (no partial volume with skin), inside the FOV
    near_body = ndi.binary_dilation(
        body,
        iterations=max(1, int(round(10.0 / min(sy, sx)))),
        structure=np.array(
            [[[0, 0, 0], [0, 1, 0], [0, 0, 0]], [[0, 1, 0], [1, 1, 1], [0, 1, 0]], [[0, 0, 0], [0, 1, 0], [0, 0, 0]]], bool
        ),
    )
    air = ~near_body & (smooth > _PADDING_HU) & (smooth < -900)
    if (r := _robust(arr[air], smooth[air])) is not None:
        found["air"] = r

    # subcutaneous fat: 2–20 mm under the skin, fat-range HU
    depth = np.stack(
        [ndi.distance_transform_edt(body[k], sampling=(sy, sx)).astype(np.float32) for k in range(body.shape[0])]
    )
    rim = body & (depth >= 2.0) & (depth <= 20.0) & (smooth >= -200) & (smooth <= -40)
    if (r := _robust(arr[rim], smooth[rim])) is not None:
        found["fat"] = r

    if labels is None:
        return found
    canon_labels, _ = canonicalize(labels, copy=False)
    bone = block_mean(np.asarray(canon_labels.array) > 0, factors) > 0.25
    slices = np.flatnonzero(bone.any(axis=(1, 2)))
    if slices.size == 0:
        return found
    yy = (np.arange(arr.shape[1]) * sy)[:, None]
    xx = (np.arange(arr.shape[2]) * sx)[None, :]
    muscle_vals, muscle_smooth, blood_slices = [], [], []
    for k in slices:
        pts = np.argwhere(bone[k])
        cy, cx = pts[:, 0].mean() * sy, pts[:, 1].mean() * sx
        front = pts[:, 0].min() * sy
        # paraspinal muscle: 15–60 mm behind the vertebra's centre, 15–55 mm to either side
        region = (yy > cy + 15) & (yy < cy + 60) & (np.abs(xx - cx) > 15) & (np.abs(xx - cx) < 55)
        sel = region & body[k] & ~bone[k] & (smooth[k] >= 0) & (smooth[k] <= 120)
        muscle_vals.append(arr[k][sel])
        muscle_smooth.append(smooth[k][sel])
        # aorta: up to 45 mm in front of the vertebra, from the midline to 45 mm left (+x)
        box = (yy > front - 45) & (yy < front) & (xx > cx - 10) & (xx < cx + 45)
        blood_slices.append((k, box))
    if muscle_vals and (r := _robust(np.concatenate(muscle_vals), np.concatenate(muscle_smooth))) is not None:
        found["muscle"] = r
    aorta = _find_aorta(arr, body, bone, blood_slices, (sz, sy, sx))
    if aorta is not None:
        found["blood"] = aorta
    return found


def _find_aorta(arr, body, bone, slices, spacing: SpacingZYX, min_length_mm: float = 20.0) -> dict | None:
    """The aorta: in each slice, the largest round, homogeneous blob of blood-like or enhanced HU
    (judged on a lightly smoothed slice, so noise does not break it up; its values are then taken
    unsmoothed), kept when it lies on the aorta's course (:func:`_on_track`); found when such blobs
    span at least ``min_length_mm`` along the spine (it divides at L4, so in a scan reaching into
    the pelvis it is absent from many of the vertebrae's slices). ``length_mm`` says how much was
    found (the calibration weighs blood by it)."""
    sz, sy, sx = spacing
    px = sy * sx
    blobs = []  # (slice, centre y mm, centre x mm, values)
    for k, box in slices:
        sl = arr[k].astype(np.float64)
        ys, xs = np.nonzero(box)
        if ys.size == 0:
            continue
        crop = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
        c = sl[crop]
        smooth = ndi.gaussian_filter(c, 1.0)
        mean = ndi.uniform_filter(smooth, size=3)
        sq = ndi.uniform_filter(smooth * smooth, size=3)
        sd = np.sqrt(np.maximum(sq - mean * mean, 0))
        candidate = box[crop] & body[k][crop] & ~bone[k][crop] & (smooth >= 15) & (smooth <= 500) & (sd <= 25)
        lab, n = ndi.label(candidate)
        best = None
        for b, obj in enumerate(ndi.find_objects(lab), start=1):
            disc = lab[obj] == b
            area = disc.sum() * px
            h, w = (obj[0].stop - obj[0].start) * sy, (obj[1].stop - obj[1].start) * sx
            if not (150 <= area <= 1500) or max(h, w) > 1.5 * min(h, w) or area / (h * w) < 0.6:
                continue
            if best is None or area > best[0]:
                centre = (
                    ((obj[0].start + obj[0].stop) / 2 + ys.min()) * sy,
                    ((obj[1].start + obj[1].stop) / 2 + xs.min()) * sx,
                )
                best = (area, c[obj][ndi.binary_erosion(disc)] if disc.sum() > 20 else c[obj][disc], centre)
        if best is not None:
            blobs.append((k, *best[2], best[1]))
    values = [b[3] for b in _on_track(blobs, sz)]
    length = len(values) * sz
    if not values or length < min_length_mm:
        return None
    out = _robust(np.concatenate(values))
    if out is None:
        return None
    # around the median of the slices' means, each slice weighted by how close its mean lies to it
    # (fully within AORTA_SLICE_HU, not at all beyond twice that, linearly between): a slice more or
    # less barely moves the result, and slices whose blob took in something brighter (a calcified
    # plaque, the front of a body: 60–80 HU against 45 on one CT) do not count
    means = np.array([v.mean() for v in values])
    middle = float(np.median(means))
    weights = np.clip(2.0 - np.abs(means - middle) / AORTA_SLICE_HU, 0.0, 1.0)
    out["hu"] = float(np.dot(weights, means) / weights.sum())
    out["se_hu"] = float(max(out["se_hu"], 1.2533 * 1.4826 * np.median(np.abs(means - out["hu"])) / np.sqrt(means.size)))
    out["contrast_phase"] = contrast_phase_from_aorta(out["hu"])
    out["length_mm"] = float(length)
    return out


#: A slice's blob belongs to the aorta when its centre lies this close (mm) to the course of the
#: other slices' blobs (their median centre within :data:`AORTA_TRACK_WINDOW_MM` along the spine).
AORTA_TRACK_MM = 10.0
AORTA_TRACK_WINDOW_MM = 40.0
#: A slice's mean this far (HU) from the median of the slices' means starts to count less (see _find_aorta).
AORTA_SLICE_HU = 10.0


def _on_track(blobs: list, slice_mm: float) -> list:
    """The blobs ``(slice, y_mm, x_mm, values)`` that lie on the aorta's course: within
    :data:`AORTA_TRACK_MM` of the median centre of the blobs within ±½ :data:`AORTA_TRACK_WINDOW_MM`
    along the spine. The aorta is a tube, so its blobs line up from slice to slice; the round blob
    of another structure (the psoas, the crus, a vein, bright tissue in front of a body) found in a
    slice where the aorta was missed lies off that course. Which slices find the aorta changes with
    the noise; a median over blobs of different structures (40–80 HU on one CT) moved with it and
    the calibration's intercept by 1 mg/cm³ between two noise draws."""
    if len(blobs) < 3:
        return blobs
    ks = np.array([b[0] for b in blobs], dtype=np.float64) * slice_mm
    yx = np.array([(b[1], b[2]) for b in blobs])
    keep = []
    for i, b in enumerate(blobs):
        near = np.abs(ks - ks[i]) <= AORTA_TRACK_WINDOW_MM / 2
        centre = np.median(yx[near], axis=0)
        if np.hypot(*(yx[i] - centre)) <= AORTA_TRACK_MM:
            keep.append(b)
    return keep


def _blood_weight(blood: dict, contrast_known: bool | None, config: CalibrationConfig) -> float:
    """How much blood counts (0–1): none with a contrast agent, less as the aorta brightens from
    ``blood_native_below_hu`` to ``blood_contrast_above_hu``, less when little aorta was found."""
    if contrast_known:
        return 0.0
    c = config.internal
    hu = blood["hu"]
    contrast = float(np.clip((c.blood_contrast_above_hu - hu) / (c.blood_contrast_above_hu - c.blood_native_below_hu), 0, 1))
    found = float(np.clip((blood.get("length_mm", c.blood_full_length_mm) - 20.0) / (c.blood_full_length_mm - 20.0), 0, 1))
    return contrast * found


def weighted_line(x: np.ndarray, y: np.ndarray, se: np.ndarray, tau: np.ndarray, weight: np.ndarray):
    """Weighted least squares y = gain · x + offset with weights ``weight / (se² + tau²)``.

    Returns (gain, offset, cov) where cov is the statistical covariance of (gain, offset) from the
    tissues' standard errors alone (sandwich form): how much the line moves with fresh noise."""
    w = weight / (se**2 + tau**2)
    X = np.column_stack([x, np.ones_like(x)])
    A = X.T @ (w[:, None] * X)
    A_inv = np.linalg.inv(A)
    gain, offset = A_inv @ (X.T @ (w * y))
    meat = X.T @ ((w**2 * se**2)[:, None] * X)
    return float(gain), float(offset), A_inv @ meat @ A_inv


def internal_calibration(
    volume: Volume,
    labels: LabelMap | None,
    config: CalibrationConfig | None = None,
    *,
    contrast_known: bool | None = None,
    tissues: dict[str, dict] | None = None,
) -> Calibration:
    """Fit the scanner's HU scale from reference tissues; ``method="none"`` when too few are found.

    Needs air and at least one of fat or muscle. Blood is used only on a native (non-contrast)
    scan: when ``contrast_known`` is true, or the aorta reads as enhanced, it is left out.
    ``tissues``: :func:`find_reference_tissues` of this volume and labels, when already found.
    """
    config = config or CalibrationConfig()
    tissues = find_reference_tissues(volume, labels) if tissues is None else tissues
    warnings = []
    blood = tissues.get("blood")
    weights = {t: 1.0 for t in ("air", "fat", "muscle")}
    if blood is not None:
        weights["blood"] = _blood_weight(blood, contrast_known, config)
        blood["weight"] = weights["blood"]
        if weights["blood"] < 1.0:
            why = (
                "a contrast agent is recorded"
                if contrast_known
                else f"the aorta reads {blood['hu']:.0f} HU ({blood['contrast_phase']})"
                if blood["hu"] > config.internal.blood_native_below_hu
                else f"only {blood.get('length_mm', 0):.0f} mm of aorta found"
            )
            how = "left out of" if weights["blood"] == 0 else f"weighted {weights['blood']:.2f} in"
            warnings.append(f"aortic blood {how} the internal calibration: {why}")
    nominal = config.internal.nominal_hu
    names = [t for t in ("air", "fat", "muscle", "blood") if t in tissues and t in nominal and weights.get(t, 0) > 0]
    meta = volume.metadata
    scanner = ScannerInfo(
        manufacturer=meta.get("manufacturer"),
        model=meta.get("manufacturer_model"),
        kvp=meta.get("kvp"),
        convolution_kernel=meta.get("convolution_kernel"),
    )
    if "air" not in names or not ({"fat", "muscle"} & set(names)):
        missing = [t for t in ("air", "fat", "muscle") if t not in names]
        return Calibration(
            method="none",
            reference_tissues=tissues,
            scanner=scanner,
            warnings=warnings + [f"internal calibration not possible: {', '.join(missing)} not found"],
        )
    x = np.array([nominal[t] for t in names])
    y = np.array([tissues[t]["hu"] for t in names])
    se = np.array([tissues[t]["se_hu"] for t in names])
    tau = np.array([config.internal.between_patient_sd_hu[t] for t in names])
    gain, offset, cov = weighted_line(x, y, se, tau, np.array([weights[t] for t in names]))
    r2 = r_squared(x, y, gain, offset)
    k = config.internal.ha_mg_cm3_per_hu
    kvp = meta.get("kvp")
    # the nominal factor holds at 120 kVp: bone HU at another kVp is first normalised to 120 kVp
    kvp_scale = kvp_factor(kvp, config) if (kvp and config.kvp_correction.enabled) else 1.0
    if kvp and abs(kvp - 120) > 0.5 and config.kvp_correction.enabled:
        warnings.append(f"internal calibration at {kvp:g} kVp: bone HU normalised to 120 kVp (factor {kvp_scale:.3f})")
    slope = k / (gain * kvp_scale)
    intercept = -k * offset / (gain * kvp_scale)
    # (slope, intercept) as functions of (gain, offset): their covariance by the delta method
    jac = np.array([[-k / (gain**2 * kvp_scale), 0.0], [k * offset / (gain**2 * kvp_scale), -k / (gain * kvp_scale)]])
    cov_si = jac @ cov @ jac.T
    for t in names:
        tissues[t]["nominal_hu"] = nominal[t]
    return Calibration(
        method="internal",
        material="HA",
        slope=float(slope),
        intercept=float(intercept),
        r2=float(r2),
        reference_tissues={t: tissues[t] for t in tissues},
        scanner=scanner,
        warnings=warnings,
        slope_intercept_cov=[[float(v) for v in row] for row in cov_si],
        details={
            "gain": float(gain),
            "offset_hu": float(offset),
            "ha_mg_cm3_per_hu": k,
            "kvp_factor": kvp_scale,
            "n_tissues": float(len(names)),
            "block_voxels": float(np.prod(block_factors(volume.spacing_mm, _WORK_MM))),
        },
    )

"""Internal (phantomless) calibration from reference tissues inside the scan.

Reference tissues are found automatically in the canonical frame: air outside the body,
subcutaneous fat (a rim under the skin), paraspinal muscle (behind the vertebral bodies) and aortic
blood (in front of and left of the bodies; left out when contrast is present). Their measured HU
against nominal HU (configs: air −1000, fat −100, muscle 50, blood 40) gives the scanner's HU scale
``measured = gain · nominal + offset``; densities then follow from the corrected HU with a nominal
HA factor: ``ρ_HA = k · (HU − offset)/gain``. This is the simple two-or-more-point variant of
SCIENCE §4 (a line through air and soft-tissue references with assigned values).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from volbmd.calibrate.base import Calibration, ScannerInfo
from volbmd.calibrate.corrections import contrast_phase_from_aorta, kvp_factor
from volbmd.config import CalibrationConfig
from volbmd.geometry import block_factors, block_mean, canonicalize
from volbmd.volume import LabelMap, Volume

__all__ = ["find_reference_tissues", "internal_calibration", "MIN_TISSUE_VOXELS"]

MIN_TISSUE_VOXELS = 200
_WORK_MM = 2.0
_PADDING_HU = -1100.0  # values below this are outside the reconstruction circle, not air


def _body_mask(arr: np.ndarray) -> np.ndarray:
    """The patient: the largest connected object above −500 HU, holes filled per slice."""
    solid = arr > -500
    lab, n = ndi.label(solid)
    if n == 0:
        return solid
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    body = lab == int(np.argmax(sizes))
    for k in range(body.shape[0]):
        body[k] = ndi.binary_fill_holes(body[k])
    return body


def _robust(values: np.ndarray) -> dict | None:
    """The tissue's HU as the mode of a smoothed histogram (robust to other tissue in the region,
    such as fat in muscle), with the voxel count and the interquartile range."""
    if values.size < MIN_TISSUE_VOXELS:
        return None
    lo, hi = np.percentile(values, [1, 99])
    if hi - lo < 2.0:
        mode = float(np.median(values))
    else:
        edges = np.arange(np.floor(lo) - 0.5, np.ceil(hi) + 1.5, 1.0)
        counts, _ = np.histogram(values, bins=edges)
        smooth = ndi.gaussian_filter1d(counts.astype(np.float64), sigma=3.0)
        mode = float(0.5 * (edges[:-1] + edges[1:])[int(np.argmax(smooth))])
    return {"hu": mode, "n_voxels": int(values.size), "iqr_hu": float(np.subtract(*np.percentile(values, [75, 25])))}


def find_reference_tissues(volume: Volume, labels: LabelMap | None = None) -> dict[str, dict]:
    """Median HU of air, subcutaneous fat, paraspinal muscle and aortic blood (when found).

    Muscle and blood are looked for relative to the vertebral bodies, so they need ``labels``.
    Each entry: ``{"hu", "n_voxels", "iqr_hu"}``; blood also gives ``contrast_phase``.
    """
    canon, _ = canonicalize(volume, copy=False)
    # work on a ~2 mm grid: tissue values are modes of large regions, and memory stays small
    factors = block_factors(canon.spacing_mm, _WORK_MM)
    arr = block_mean(canon.array, factors)
    sz, sy, sx = (s * f for s, f in zip(canon.spacing_mm, factors))
    body = _body_mask(arr)
    found: dict[str, dict] = {}

    # air: outside the body, away from it by 10 mm (no partial volume with skin), inside the FOV
    near_body = ndi.binary_dilation(body, iterations=max(1, int(round(10.0 / min(sy, sx)))), structure=np.array(
        [[[0, 0, 0], [0, 1, 0], [0, 0, 0]], [[0, 1, 0], [1, 1, 1], [0, 1, 0]], [[0, 0, 0], [0, 1, 0], [0, 0, 0]]], bool))
    air = ~near_body & (arr > _PADDING_HU) & (arr < -900)
    if (r := _robust(arr[air].astype(np.float64))) is not None:
        found["air"] = r

    # subcutaneous fat: 2–20 mm under the skin, fat-range HU
    depth = np.stack([ndi.distance_transform_edt(body[k], sampling=(sy, sx)).astype(np.float32) for k in range(body.shape[0])])
    rim = body & (depth >= 2.0) & (depth <= 20.0) & (arr >= -200) & (arr <= -30)
    if (r := _robust(arr[rim].astype(np.float64))) is not None:
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
    muscle_vals, blood_slices = [], []
    for k in slices:
        pts = np.argwhere(bone[k])
        cy, cx = pts[:, 0].mean() * sy, pts[:, 1].mean() * sx
        front = pts[:, 0].min() * sy
        # paraspinal muscle: 15–60 mm behind the vertebra's centre, 15–55 mm to either side
        region = (yy > cy + 15) & (yy < cy + 60) & (np.abs(xx - cx) > 15) & (np.abs(xx - cx) < 55)
        sel = region & body[k] & ~bone[k] & (arr[k] >= 0) & (arr[k] <= 120)
        muscle_vals.append(arr[k][sel])
        # aorta: up to 45 mm in front of the vertebra, from the midline to 45 mm left (+x)
        box = (yy > front - 45) & (yy < front) & (xx > cx - 10) & (xx < cx + 45)
        blood_slices.append((k, box))
    if muscle_vals and (r := _robust(np.concatenate(muscle_vals).astype(np.float64))) is not None:
        found["muscle"] = r
    aorta = _find_aorta(arr, body, bone, blood_slices, (sz, sy, sx))
    if aorta is not None:
        found["blood"] = aorta
    return found


def _find_aorta(arr, body, bone, slices, spacing, min_length_mm: float = 30.0) -> dict | None:
    """The aorta: in each slice, the largest round, homogeneous blob of blood-like or enhanced HU;
    found when such blobs span at least ``min_length_mm`` along the spine (it divides at L4, so in a
    scan reaching into the pelvis it is absent from many of the vertebrae's slices)."""
    sz, sy, sx = spacing
    px = sy * sx
    values = []
    for k, box in slices:
        sl = arr[k].astype(np.float64)
        ys, xs = np.nonzero(box)
        if ys.size == 0:
            continue
        crop = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
        c = sl[crop]
        mean = ndi.uniform_filter(c, size=3)
        sq = ndi.uniform_filter(c * c, size=3)
        sd = np.sqrt(np.maximum(sq - mean * mean, 0))
        candidate = box[crop] & body[k][crop] & ~bone[k][crop] & (c >= 15) & (c <= 500) & (sd <= 25)
        lab, n = ndi.label(candidate)
        best = None
        for b, obj in enumerate(ndi.find_objects(lab), start=1):
            disc = lab[obj] == b
            area = disc.sum() * px
            h, w = (obj[0].stop - obj[0].start) * sy, (obj[1].stop - obj[1].start) * sx
            if not (150 <= area <= 1500) or max(h, w) > 1.5 * min(h, w) or area / (h * w) < 0.6:
                continue
            if best is None or area > best[0]:
                best = (area, c[obj][disc])
        if best is not None:
            values.append(best[1])
    if not values or len(values) * sz < min_length_mm:
        return None
    out = _robust(np.concatenate(values))
    if out is None:
        return None
    out["contrast_phase"] = contrast_phase_from_aorta(out["hu"])
    return out


def internal_calibration(volume: Volume, labels: LabelMap | None, config: CalibrationConfig | None = None,
                         *, contrast_known: bool | None = None) -> Calibration:
    """Fit the scanner's HU scale from reference tissues; ``method="none"`` when too few are found.

    Needs air and at least one of fat or muscle. Blood is used only on a native (non-contrast)
    scan: when ``contrast_known`` is true, or the aorta reads as enhanced, it is left out.
    """
    config = config or CalibrationConfig()
    tissues = find_reference_tissues(volume, labels)
    warnings = []
    phase = tissues.get("blood", {}).get("contrast_phase")
    use = dict(tissues)
    if "blood" in use and (contrast_known or phase in ("arterial", "portal_venous")):
        use.pop("blood")
        warnings.append(f"contrast present ({phase or 'DICOM contrast agent'}): aortic blood left out of the internal calibration")
    nominal = config.internal.nominal_hu
    names = [t for t in ("air", "fat", "muscle", "blood") if t in use and t in nominal]
    meta = volume.metadata
    scanner = ScannerInfo(manufacturer=meta.get("manufacturer"), model=meta.get("manufacturer_model"),
                          kvp=meta.get("kvp"), convolution_kernel=meta.get("convolution_kernel"))
    if "air" not in names or not ({"fat", "muscle"} & set(names)):
        missing = [t for t in ("air", "fat", "muscle") if t not in names]
        return Calibration(method="none", reference_tissues=tissues, scanner=scanner,
                           warnings=warnings + [f"internal calibration not possible: {', '.join(missing)} not found"])
    x = np.array([nominal[t] for t in names])
    y = np.array([use[t]["hu"] for t in names])
    gain, offset = np.polyfit(x, y, 1)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 if ss_tot == 0 else 1.0 - float(np.sum((y - (gain * x + offset)) ** 2)) / ss_tot
    k = config.internal.ha_mg_cm3_per_hu
    kvp = meta.get("kvp")
    # the nominal factor holds at 120 kVp: bone HU at another kVp is first normalised to 120 kVp
    kvp_scale = kvp_factor(kvp, config) if (kvp and config.kvp_correction.enabled) else 1.0
    if kvp and abs(kvp - 120) > 0.5 and config.kvp_correction.enabled:
        warnings.append(f"internal calibration at {kvp:g} kVp: bone HU normalised to 120 kVp (factor {kvp_scale:.3f})")
    slope = k / (gain * kvp_scale)
    intercept = -k * offset / (gain * kvp_scale)
    for t in names:
        use[t]["nominal_hu"] = nominal[t]
    return Calibration(
        method="internal", material="HA", slope=float(slope), intercept=float(intercept), r2=float(r2),
        reference_tissues={t: tissues[t] for t in tissues}, scanner=scanner, warnings=warnings,
        details={"gain": float(gain), "offset_hu": float(offset), "ha_mg_cm3_per_hu": k, "kvp_factor": kvp_scale,
                 "n_tissues": float(len(names))},
    )

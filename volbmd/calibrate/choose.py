"""Which calibration a scan gets (given, else internal, else none), the contrast state, and each
level's BMD with its uncertainty."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from volbmd.calibrate.base import Calibration
from volbmd.config import PipelineConfig
from volbmd.volume import LabelMap, Volume

if TYPE_CHECKING:
    from volbmd.measure import MeasurementResult

__all__ = ["LevelDensities", "calibrate_levels", "scanner_mismatches", "uses_internal_calibration"]


@dataclass
class LevelDensities:
    """The calibration chosen and, per level, the BMD (mg/cm³ of the calibration's material), its
    SD, the SD from noise and calibration statistics alone (as if the masks were fixed: the least a
    repeat scan moves the value) and the HU standard errors behind them."""

    calibration: Calibration
    hu_correction: float
    contrast_phase: str | None
    bmd_by_level: dict[str, float | None]
    bmd_sd_by_level: dict[str, float | None]
    bmd_sd_fixed_by_level: dict[str, float | None]
    hu_se: dict[str, float]
    hu_se_fixed: dict[str, float]
    warnings: list[str]


def scanner_mismatches(cal: Calibration, volume: Volume) -> list[str]:
    meta = volume.metadata
    pairs = {
        "manufacturer": (cal.scanner.manufacturer, meta.get("manufacturer")),
        "scanner model": (cal.scanner.model, meta.get("manufacturer_model")),
        "kVp": (cal.scanner.kvp, meta.get("kvp")),
        "convolution kernel": (cal.scanner.convolution_kernel, meta.get("convolution_kernel")),
    }
    out = []
    for what, (stored, scan) in pairs.items():
        if stored is None or scan is None:
            if stored is not None:
                out.append(f"stored calibration: the scan does not record its {what} (calibration: {stored})")
            continue
        same = (
            abs(float(stored) - float(scan)) < 0.5
            if what == "kVp"
            else str(stored).strip().lower() == str(scan).strip().lower()
        )
        if not same:
            out.append(f"stored calibration differs from the scan in {what}: {stored} vs {scan}")
    return out


def uses_internal_calibration(volume: Volume, config: PipelineConfig, calibration: Calibration | None) -> bool:
    """Whether :func:`calibrate_levels` fits the internal calibration: none given, internal
    calibration on, and the scan a CT."""
    return calibration is None and config.calibration.internal.enabled and volume.metadata.get("modality") in (None, "CT")


def calibrate_levels(
    volume: Volume,
    labels: LabelMap,
    result: MeasurementResult,
    config: PipelineConfig,
    calibration: Calibration | None = None,
    *,
    masks_given: bool = False,
    tissues: dict[str, dict] | None = None,
) -> LevelDensities:
    """Choose the calibration (given, else internal, else none) and compute BMD and its SD per level.

    ``tissues``: the reference tissues of :func:`~volbmd.calibrate.internal.find_reference_tissues`
    when already found (the pipeline finds them while it measures); else they are found here."""
    from volbmd.calibrate.corrections import contrast_correction_hu
    from volbmd.calibrate.internal import internal_calibration
    from volbmd.calibrate.uncertainty import roi_mean_se_hu

    cal_cfg = config.calibration
    meta = volume.metadata
    warnings: list[str] = []
    contrast_agent = bool(meta.get("contrast_agent")) and str(meta.get("contrast_agent")).strip().upper() not in (
        "NONE",
        "NO",
    )
    is_ct = meta.get("modality") in (None, "CT")
    if calibration is not None:
        cal = calibration.model_copy(deep=True)
        if cal.method == "phantom":
            cal.method = "stored"
        warnings += scanner_mismatches(cal, volume)
    elif uses_internal_calibration(volume, config, calibration):
        cal = internal_calibration(volume, labels, cal_cfg, contrast_known=contrast_agent, tissues=tissues)
    else:
        cal = Calibration(method="none", warnings=["no calibration: HU only" + ("" if is_ct else " (not a CT)")])
    warnings += cal.warnings
    phase = meta.get("contrast_phase") or cal.reference_tissues.get("blood", {}).get("contrast_phase")
    if contrast_agent and phase in (None, "native"):
        phase = "contrast (phase unknown)"
    aorta_hu = cal.reference_tissues.get("blood", {}).get("hu") if not meta.get("contrast_phase") else None
    correction = contrast_correction_hu(phase, cal_cfg, aorta_hu=aorta_hu)
    if correction:
        warnings.append(f"contrast correction applied: −{correction:g} HU ({phase}) before calibration")
    elif phase not in (None, "native"):
        warnings.append(f"contrast present ({phase}): BMD may read high; contrast correction is off")
    bmd: dict[str, float | None] = {}
    bmd_sd: dict[str, float | None] = {}
    bmd_sd_fixed: dict[str, float | None] = {}
    hu_se: dict[str, float] = {}
    hu_se_fixed: dict[str, float] = {}
    for m in result.levels:
        if cal.method == "none" or m.trabecular_hu_mean is None:
            bmd[m.level] = bmd_sd[m.level] = bmd_sd_fixed[m.level] = None
        else:
            hu_se[m.level] = roi_mean_se_hu(
                m, cal, masks_given=masks_given, boundary_jitter_voxels=config.uncertainty.boundary_jitter_voxels
            )
            hu_se_fixed[m.level] = roi_mean_se_hu(m, cal, masks_given=True)
            bmd[m.level] = float(cal.to_density(m.trabecular_hu_mean - correction))
            bmd_sd[m.level] = cal.density_sd(m.trabecular_hu_mean - correction, hu_se[m.level])
            bmd_sd_fixed[m.level] = cal.density_sd(m.trabecular_hu_mean - correction, hu_se_fixed[m.level])
    return LevelDensities(cal, correction, phase, bmd, bmd_sd, bmd_sd_fixed, hu_se, hu_se_fixed, warnings)

"""Classification: ACR QCT category, the opportunistic L1 HU screen, Genant grade in the summary."""

from __future__ import annotations

from dataclasses import dataclass, field

from volbmd.config import ClassificationConfig, L1ScreenConfig, ThresholdSet
from volbmd.labels import level_rank

__all__ = [
    "in_words",
    "acr_category",
    "choose_levels",
    "l1_screen",
    "LevelResult",
    "Classification",
    "classify",
    "borderline_notes",
    "summary_density_sd",
    "summarize_levels",
]

CATEGORIES = ("normal", "low_bmd", "osteoporosis", "severe_osteoporosis")

#: Words for people (console, HTML, napari) for the codes that report.json and the CSV keep.
_WORDS = {
    "low_bmd": "low BMD",
    "severe_osteoporosis": "severe osteoporosis",
    "not_applicable_kvp": "not applicable (kVp not recorded or not 120; --kvp gives it)",
    "osteoporosis_likely": "osteoporosis likely",
    "osteoporosis_possible": "osteoporosis possible",
    "osteoporosis_unlikely": "osteoporosis unlikely",
    "portal_venous": "portal venous",
}


def in_words(code: str | None, missing: str = "–") -> str:
    """A category, screen or phase code as words: "low_bmd" → "low BMD"; None → ``missing``."""
    if code is None:
        return missing
    return _WORDS.get(code, code.replace("_", " "))


def acr_category(bmd_mg_cm3: float, thresholds: ThresholdSet, *, fracture: bool = False) -> str:
    """ACR QCT category: > normal limit normal; limit values themselves are low BMD; < lower limit
    osteoporosis, severe with an insufficiency fracture."""
    if bmd_mg_cm3 > thresholds.normal_above_mg_cm3:
        return "normal"
    if bmd_mg_cm3 >= thresholds.osteoporosis_below_mg_cm3:
        return "low_bmd"
    return "severe_osteoporosis" if fracture else "osteoporosis"


@dataclass
class LevelResult:
    level: str
    bmd_mg_cm3: float | None
    genant_grade: int | None
    flags: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        blocking = ("empty_mask", "roi_empty", "roi_too_small", "too_small", "body_split_failed", "rejected_by_reviewer")
        # high_hu_spread: the ROI holds something other than marrow (an endplate, cortex or a sclerotic
        # focus the measurement's exclusions left in), so its mean is no BMD
        cut = any(f.startswith(("cut_by_scan_edge", "implausible", "high_hu_spread")) for f in self.flags)
        return (
            self.bmd_mg_cm3 is not None
            and not (self.genant_grade or 0) >= 1
            and not any(f in blocking for f in self.flags)
            and not cut
        )


def choose_levels(levels: dict[str, LevelResult], config: ClassificationConfig) -> tuple[list[str], list[str]]:
    """Two valid lumbar levels: the preferred ones (L1, L2), a fractured or unmeasurable one replaced
    by the next valid level. Returns the levels used and the notes saying what was replaced."""
    used, notes = [], []
    pool = [lvl for lvl in config.fallback_levels]
    for wanted in config.levels:
        res = levels.get(wanted)
        if res is not None and res.valid:
            used.append(wanted)
            continue
        why = (
            "missing"
            if res is None
            else (
                f"fractured (Genant {res.genant_grade})"
                if (res.genant_grade or 0) >= 1
                else ("not measurable: " + ", ".join(res.flags) if res.flags else "not measurable")
            )
        )
        while pool:
            candidate = pool.pop(0)
            cres = levels.get(candidate)
            if candidate not in used and cres is not None and cres.valid:
                used.append(candidate)
                notes.append(f"{wanted} {why}: replaced by {candidate}")
                break
        else:
            notes.append(f"{wanted} {why}: no valid level to replace it")
    return sorted(used, key=level_rank), notes


def l1_screen(l1_hu: float | None, kvp: float | None, normalised: bool, config: L1ScreenConfig) -> str | None:
    """Opportunistic L1 trabecular HU (Pickhardt 2013), valid at 120 kVp or after normalisation."""
    if l1_hu is None:
        return None
    if not normalised and (kvp is None or abs(kvp - 120.0) > 0.5):
        return "not_applicable_kvp"
    if l1_hu <= config.osteoporosis_likely_at_or_below:
        return "osteoporosis_likely"
    if l1_hu <= config.sensitive_at_or_below:
        return "osteoporosis_possible"
    if l1_hu <= config.unlikely_above:
        return "indeterminate"
    return "osteoporosis_unlikely"


@dataclass
class Classification:
    bmd_mg_cm3_mean: float | None
    levels_used: list[str]
    acr_category: str | None
    notes: list[str]
    max_genant_grade: int | None
    fractured_levels: list[str]


def classify(levels: dict[str, LevelResult], thresholds: ThresholdSet, config: ClassificationConfig) -> Classification:
    """ACR category on the mean BMD of two valid lumbar levels (in the threshold set's material)."""
    grades = {lvl: r.genant_grade for lvl, r in levels.items() if r.genant_grade is not None}
    fractured = [lvl for lvl, g in grades.items() if g >= 1]
    max_grade = max(grades.values()) if grades else None
    used, notes = choose_levels(levels, config)
    if len(used) < 2:
        notes.append(f"ACR category needs two valid lumbar levels; {len(used)} available")
        return Classification(None, used, None, notes, max_grade, fractured)
    mean = sum(levels[lvl].bmd_mg_cm3 for lvl in used) / len(used)  # type: ignore[misc]
    category = acr_category(mean, thresholds, fracture=bool(fractured))
    return Classification(float(mean), used, category, notes, max_grade, fractured)


def borderline_notes(bmd_mg_cm3: float, sd_mg_cm3: float | None, thresholds: ThresholdSet) -> list[str]:
    """A note when the category would change within one SD of the BMD (e.g. 118 ± 4 mg/cm³ near 120)."""
    if sd_mg_cm3 is None or not sd_mg_cm3 > 0:
        return []
    low, high = acr_category(bmd_mg_cm3 - sd_mg_cm3, thresholds), acr_category(bmd_mg_cm3 + sd_mg_cm3, thresholds)
    if low == high:
        return []
    limit = min((thresholds.normal_above_mg_cm3, thresholds.osteoporosis_below_mg_cm3), key=lambda t: abs(t - bmd_mg_cm3))
    return [
        f"borderline: {bmd_mg_cm3:.1f} ± {sd_mg_cm3:.1f} mg/cm³ is within one SD of the {limit:g} mg/cm³ limit "
        f"({low.replace('_', ' ')} to {high.replace('_', ' ')})"
    ]


def summary_density_sd(calibration, hus: list[float], hu_ses: list[float]) -> float:
    """SD (mg/cm³) of the mean density of levels at ``hus`` (HU) with standard errors ``hu_ses``:
    the levels' own errors average out, the calibration they share does not."""
    import numpy as np

    se = float(np.sqrt(np.sum(np.square(hu_ses)))) / len(hus)
    return calibration.density_sd(float(np.mean(hus)), se)


def summarize_levels(volume, result, densities, config) -> tuple[dict, list[str], float | None]:
    """The summary of a calibrated measurement: ACR category over the chosen levels (in the
    threshold set's material), its SD and borderline note, the L1 HU screen, fractures. Returns the
    summary (report.json's keys), warnings, and the summary's SD from noise and calibration
    statistics alone."""

    from volbmd.calibrate.corrections import convert_density, normalise_hu_to_120kvp
    from volbmd.config import load_threshold_set

    cal, correction = densities.calibration, densities.hu_correction
    bmd, hu_se, hu_se_fixed = densities.bmd_by_level, densities.hu_se, densities.hu_se_fixed
    cal_cfg = config.calibration
    meta = volume.metadata
    warnings: list[str] = []
    thresholds = load_threshold_set(config.classification.threshold_set)
    to_threshold_material = 1.0
    if cal.material and cal.material != thresholds.material:
        to_threshold_material = float(convert_density(1.0, cal.material, thresholds.material, meta.get("kvp"), cal_cfg))
    levels = {}
    for m in result.levels:
        value = bmd[m.level]
        if value is not None:
            value = value * to_threshold_material
        levels[m.level] = LevelResult(m.level, value, m.genant_grade, list(m.flags))
    cls = classify(levels, thresholds, config.classification)
    summary_sd = summary_sd_fixed = None
    borderline = []
    if cls.bmd_mg_cm3_mean is not None and cal.method != "none":
        # the levels share one calibration: its uncertainty does not average out between them
        by_level = result.by_level()
        used = cls.levels_used
        hus = [by_level[lvl].trabecular_hu_mean - correction for lvl in used]
        summary_sd = summary_density_sd(cal, hus, [hu_se[lvl] for lvl in used]) * to_threshold_material
        summary_sd_fixed = summary_density_sd(cal, hus, [hu_se_fixed[lvl] for lvl in used]) * to_threshold_material
        borderline = borderline_notes(cls.bmd_mg_cm3_mean, summary_sd, thresholds)
    l1 = result.by_level().get("L1")
    l1_hu = None if l1 is None or l1.trabecular_hu_mean is None else l1.trabecular_hu_mean - correction
    l1_norm, normalised = (None, False) if l1_hu is None else normalise_hu_to_120kvp(l1_hu, meta.get("kvp"), cal_cfg)
    summary = {
        "bmd_mg_cm3_mean": cls.bmd_mg_cm3_mean if cal.method != "none" else None,
        "levels_used": cls.levels_used if cal.method != "none" else [],
        "acr_category": cls.acr_category if cal.method != "none" else None,
        "material": thresholds.material if cal.method != "none" else None,
        "threshold_set": thresholds.name,
        "classification_notes": (cls.notes + borderline) if cal.method != "none" else [],
        "bmd_sd_mg_cm3": summary_sd,
        "borderline": bool(borderline),
        "l1_hu": None if l1_norm is None else float(l1_norm),
        "l1_hu_normalised_to_120kvp": bool(normalised),
        "l1_screen": l1_screen(
            None if l1_norm is None else float(l1_norm), meta.get("kvp"), normalised, config.classification.l1_screen_hu
        ),
        "max_genant_grade": cls.max_genant_grade,
        "fractured_levels": cls.fractured_levels,
    }
    if normalised:
        warnings.append(f"L1 HU normalised from {meta.get('kvp'):g} kVp to 120 kVp for the L1 screen")
    warnings += borderline
    return summary, warnings, summary_sd_fixed

"""An SD for every BMD measured by repeating the analysis: the scan is segmented, measured and
calibrated again on noisy copies, with Gaussian noise as strong as the scan's own (estimated from
the reference tissues of the internal calibration).

A copy differs from the scan as a repeat acquisition would (its noise is drawn afresh), so the
spread of a level's BMD over the copies around the scan's own value is the spread a repeat scan
would show: noise, the calibration's tissues, and every segmentation change (a disc plane that moves
by a slice, a posterior wall found or not), which no formula predicts. Each value's SD becomes the
root mean square of those deviations, never less than the SD from noise and calibration statistics
alone; a level not found in every copy is flagged ``unstable:found_in_K_of_N_draws``.

The draws are seeded (``uncertainty.repeat_seed``), so the same scan gives the same SD. Costs one
more analysis per draw.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from volbmd.calibrate.uncertainty import scan_noise_hu
from volbmd.volume import Volume

__all__ = ["RepeatDraws", "noisy_copy", "repeat_draws", "apply_repeat_draws"]

AnalyseOnce = Callable[[Volume], tuple[dict[str, float | None], float | None]]


@dataclass
class RepeatDraws:
    """Per level the BMD of each draw (None where the level was not found or not measured), and the
    summary mean of each draw; ``noise_hu`` is the noise added (None: no estimate, no draws)."""

    n_draws: int
    noise_hu: float | None
    bmd_by_level: dict[str, list[float | None]]
    summary_means: list[float | None]


def noisy_copy(volume: Volume, noise_hu: float, rng: np.random.Generator) -> Volume:
    """The volume plus Gaussian noise (SD ``noise_hu``), in the volume's own voxel type (integer
    HU rounded and kept in range)."""
    arr = np.asarray(volume.array)
    noisy = arr.astype(np.float32) + rng.normal(0.0, noise_hu, arr.shape).astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        noisy = np.clip(np.rint(noisy), info.min, info.max).astype(arr.dtype)
    return volume.with_array(noisy)


def repeat_draws(volume: Volume, analyse_once: AnalyseOnce, calibration, *, n_draws: int, seed: int = 0) -> RepeatDraws:
    """Run ``analyse_once`` (segment, measure, calibrate → per-level BMD and the summary mean) on
    ``n_draws`` noisy copies of ``volume``. No draws when the calibration gives no noise estimate
    (phantom or stored calibrations hold no reference tissues)."""
    noise = scan_noise_hu(calibration)
    levels: dict[str, list[float | None]] = {}
    means: list[float | None] = []
    if noise is None or n_draws <= 0:
        return RepeatDraws(0, noise, levels, means)
    for k in range(n_draws):
        bmd, mean = analyse_once(noisy_copy(volume, noise, np.random.default_rng([seed, k])))
        for level in bmd:
            levels.setdefault(level, [None] * k)
        for level in levels:
            levels[level].append(bmd.get(level))
        means.append(mean)
    return RepeatDraws(n_draws, noise, levels, means)


def _rms_deviation(values: list[float | None], centre: float) -> float | None:
    found = [v for v in values if v is not None]
    if not found:
        return None
    return math.sqrt(sum((v - centre) ** 2 for v in found) / len(found))


def apply_repeat_draws(calibrated, result, draws: RepeatDraws, config) -> None:
    """Put the measured SDs into ``calibrated`` (a ``pipeline.CalibratedResult``, from ``pipeline.calibrate_and_classify``): per level and for
    the summary, the RMS deviation of the draws from the scan's own value, at least the SD from noise
    and calibration statistics; flag levels not found in every draw; redo the borderline note."""
    from volbmd.classify import borderline_notes
    from volbmd.config import load_threshold_set

    if draws.n_draws == 0:
        calibrated.warnings.append(
            "repeat draws not made: no noise estimate (the calibration holds no reference tissues); "
            "bmd_sd_mg_cm3 is from noise, calibration and boundary terms"
        )
        return
    by_level = result.by_level()
    unstable = []
    for level, value in calibrated.bmd_by_level.items():
        if value is None:
            continue
        values = draws.bmd_by_level.get(level, [None] * draws.n_draws)
        found = sum(v is not None for v in values)
        if found < draws.n_draws:
            flag = f"unstable:found_in_{found}_of_{draws.n_draws}_draws"
            by_level[level].flags.append(flag)
            unstable.append(f"{level} ({found} of {draws.n_draws})")
        rms = _rms_deviation(values, value)
        floor = calibrated.bmd_sd_fixed_by_level.get(level) or 0.0
        calibrated.bmd_sd_by_level[level] = max(rms if rms is not None else 0.0, floor)
    if unstable:
        calibrated.warnings.append(
            f"levels not found on every repeat draw (noise {draws.noise_hu:.0f} HU): "
            f"{', '.join(unstable)}; their masks need review"
        )
    summary = calibrated.summary
    mean = summary.get("bmd_mg_cm3_mean")
    if mean is None:
        return
    rms = _rms_deviation(draws.summary_means, mean)
    missing = sum(m is None for m in draws.summary_means)
    sd = max(rms if rms is not None else 0.0, calibrated.summary_sd_fixed or 0.0)
    old = [n for n in summary.get("classification_notes", []) if n.startswith("borderline:")]
    notes = borderline_notes(mean, sd, load_threshold_set(config.classification.threshold_set))
    summary["bmd_sd_mg_cm3"] = sd
    summary["borderline"] = bool(notes)
    summary["classification_notes"] = [n for n in summary.get("classification_notes", []) if n not in old] + notes
    calibrated.warnings[:] = [w for w in calibrated.warnings if w not in old] + notes
    summary["repeat_draws"] = {"n_draws": draws.n_draws, "noise_hu": draws.noise_hu, "summary_missing": missing}
    if missing:
        calibrated.warnings.append(f"the summary could not be formed on {missing} of {draws.n_draws} repeat draws")

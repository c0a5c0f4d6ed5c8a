"""Repeatability: the internal calibration does not switch or drift with fresh noise, every BMD carries
an uncertainty, and the same scan with fresh noise gives the same BMD (tools/bench_precision.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_precision", REPO / "tools" / "bench_precision.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- units


def test_bench_summary_counts_the_levels_that_miss_the_targets():
    """The benchmark's closing table: per case, path and kind, the levels past the path's CV target
    (1 % with fixed masks, 2 % for the full pipeline) and past 2 % bias, the levels lost in some run,
    and how many reported SDs lie within half and twice the observed SD; the summary row is not a level."""
    bench = _bench()

    def row(path, level, cv, bias, ratio, found=True):
        return {"case": "c", "path": path, "kind": "noise", "level": level, "cv_pct": cv, "bias_pct": bias}, {
            "sd_ratio": ratio,
            "found_every_run": found,
        }

    rows = []
    for path, level, cv, bias, ratio, found in (
        ("fixed", "L1", 0.5, -0.3, 1.2, True),
        ("fixed", "L2", 1.5, 2.5, 0.4, True),  # over the fixed target, biased, SD under-reported
        ("fixed", "summary", 9.0, 9.0, 9.0, True),  # the ACR summary: not a level
        ("full", "L1", 1.5, 0.1, 2.5, True),  # within the full path's 2 %; SD over-reported
        ("full", "L2", float("nan"), float("nan"), float("nan"), False),  # found in one run only
        ("full", "L3", 2.2, -2.1, 1.0, True),
    ):
        a, b = row(path, level, cv, bias, ratio, found)
        rows.append(a | b)
    summary = {s["path"]: s for s in bench.summarise(rows)}
    fixed, full = summary["fixed"], summary["full"]
    assert (fixed["levels"], fixed["over_cv_target"], fixed["over_bias_target"]) == (2, 1, 1)
    assert (fixed["cv_max_pct"], fixed["bias_max_pct"], fixed["not_every_run"]) == (1.5, 2.5, 0)
    assert (fixed["sd_within_2x"], fixed["sd_compared"]) == (1, 2)
    assert (full["levels"], full["over_cv_target"], full["over_bias_target"], full["not_every_run"]) == (3, 1, 1, 1)
    assert full["cv_median_pct"] == pytest.approx(1.85)
    assert (full["sd_within_2x"], full["sd_compared"]) == (1, 2)


def test_weighted_line_covariance_matches_monte_carlo():
    from volbmd.calibrate.internal import weighted_line

    rng = np.random.default_rng(0)
    x = np.array([-1000.0, -100.0, 50.0, 40.0])
    truth = 1.02 * x + 6.0
    se = np.array([0.1, 0.4, 1.0, 2.0])
    tau = np.array([5.0, 10.0, 10.0, 8.0])
    fits = np.array([weighted_line(x, truth + rng.normal(0, se), se, tau, np.ones(4))[:2] for _ in range(4000)])
    _, _, cov = weighted_line(x, truth, se, tau, np.ones(4))
    assert np.allclose(fits.mean(axis=0), [1.02, 6.0], atol=0.02)
    assert np.allclose(np.cov(fits.T), cov, rtol=0.1, atol=1e-9)
    # a tissue with zero weight does not move the line
    off = weighted_line(x, truth + np.array([0, 0, 0, 50.0]), se, tau, np.array([1.0, 1.0, 1.0, 0.0]))
    assert off[:2] == pytest.approx((1.02, 6.0))


def test_density_sd_combines_calibration_and_measurement():
    from volbmd.calibrate.base import Calibration

    cal = Calibration(
        method="internal", material="HA", slope=0.8, intercept=2.0, slope_intercept_cov=[[1e-6, 0.0], [0.0, 0.25]]
    )
    hu = 150.0
    expected = np.sqrt((0.8 * 2.0) ** 2 + hu * hu * 1e-6 + 0.25)
    assert cal.density_sd(hu, 2.0) == pytest.approx(expected)
    bare = Calibration(method="stored", material="HA", slope=0.8, intercept=2.0)
    assert bare.density_sd(hu, 2.0) == pytest.approx(1.6)


def test_phantom_calibration_has_a_covariance():
    from volbmd.calibrate.phantom import calibrate_from_hu, load_phantom

    phantom = load_phantom("bmas200")
    densities = np.array([r.density_mg_cm3 for r in phantom.rods])
    hu = 1.1 * densities + 5 + np.array([0.5, -0.4, 0.3, -0.6, 0.2])
    cal = calibrate_from_hu(phantom, hu)
    cov = np.asarray(cal.slope_intercept_cov)
    assert cov.shape == (2, 2) and cov[0, 0] > 0 and cov[1, 1] > 0
    assert cal.density_sd(150.0) < 2.0


def test_borderline_note_when_the_category_would_change_within_one_sd():
    from volbmd.classify import borderline_notes
    from volbmd.config import load_threshold_set

    acr = load_threshold_set("acr")
    note = borderline_notes(118.0, 4.0, acr)
    assert note and "118.0 ± 4.0" in note[0] and "120" in note[0]
    assert borderline_notes(100.0, 4.0, acr) == []
    assert borderline_notes(82.0, 3.0, acr)[0].count("80") == 1
    assert borderline_notes(118.0, None, acr) == []


def test_contrast_correction_ramps_instead_of_switching():
    from volbmd.calibrate.corrections import contrast_correction_hu
    from volbmd.config import CalibrationConfig

    cfg = CalibrationConfig.model_validate({"contrast_correction": {"enabled": True}})
    values = [contrast_correction_hu(None, cfg, aorta_hu=hu) for hu in (60, 75, 80, 85, 100, 195, 200, 205, 260)]
    assert values[0] == 0 and values[4] == pytest.approx(14.75) and values[-1] == pytest.approx(20.0)
    assert np.all(np.diff(values) >= 0) and max(np.diff(values)) < 5  # no jump
    assert contrast_correction_hu("portal_venous", cfg) == pytest.approx(14.75)


def test_tissue_estimate_does_not_move_with_noise():
    """A skewed tissue distribution (fat with a partial-volume tail), chosen on its smoothed values:
    adding noise leaves the estimate where it was; a mode or median would move."""
    from volbmd.calibrate.internal import _robust

    rng = np.random.default_rng(1)
    base = np.concatenate([rng.normal(-100, 6, 20000), rng.uniform(-90, -40, 2500)])
    smooth = base + rng.normal(0, 2, base.size)  # a smoothed copy: the choice of voxels barely noisy
    clean = _robust(base, smooth)["hu"]
    noisy = [_robust(base + rng.normal(0, 15, base.size), smooth)["hu"] for _ in range(5)]
    assert max(abs(n - clean) for n in noisy) < 0.5
    assert _robust(base, smooth)["se_hu"] < 0.1


def test_aorta_blobs_off_its_course_do_not_count():
    """The aorta's blobs line up from slice to slice; a round blob of another structure, found in a
    slice where the aorta was missed, lies off that course and is dropped."""
    from volbmd.calibrate.internal import _on_track

    rng = np.random.default_rng(3)
    aorta = [(k, 140.0 + 0.3 * k, 200.0 - 0.2 * k, rng.normal(45, 15, 80)) for k in range(0, 40, 2)]
    others = [(k, 175.0, 230.0, rng.normal(75, 15, 80)) for k in (5, 17, 29)]
    kept = _on_track(sorted(aorta + others, key=lambda b: b[0]), 3.0)
    assert {b[0] for b in kept} == {b[0] for b in aorta}
    assert _on_track(others[:2], 3.0) == others[:2]  # too few blobs to know a course: all kept


def test_aortic_blood_is_not_moved_by_which_slices_find_the_aorta():
    """Slices whose blob took in something brighter (75 HU against 45) count less the farther
    their mean lies from the median, and not at all beyond 20 HU: the blood estimate stays at the
    aorta's HU whether none, 10 or 14 of 30 such slices were found (the median of the slices' means
    moved by 1.3 HU)."""
    from volbmd.calibrate import internal

    rng = np.random.default_rng(4)
    arr = rng.normal(45, 12, (30, 64, 64)).astype(np.float32)
    arr[:, :20, :] = -100.0  # fat in front; the aorta is a disc of blood in it
    yy, xx = np.mgrid[:64, :64]
    disc = (yy - 10) ** 2 + (xx - 30) ** 2 <= 6**2
    arr[:, ~disc & (yy < 20)] = -100.0
    arr[:, disc] = rng.normal(45, 12, (30, int(disc.sum())))
    body = np.ones(arr.shape, bool)
    bone = np.zeros(arr.shape, bool)
    box = (yy < 20) & (xx > 15) & (xx < 45)
    estimates = []
    for bright in ((), range(3, 13), range(3, 17)):
        a = arr.copy()
        for k in bright:
            a[k][disc] += 30.0  # plaque or bone in that slice's blob
        found = internal._find_aorta(a, body, bone, [(k, box) for k in range(30)], (3.0, 2.0, 2.0))
        estimates.append(found["hu"])
    assert max(estimates) - min(estimates) < 0.5, estimates
    assert abs(estimates[0] - 45.0) < 1.0


# ----------------------------------------------------------------------------- real scans


def _three_noise_draws(shared_data, case: str, scan: str, path: str) -> list[dict]:
    """tools/bench_precision.py's rows for one development CT under three draws of σ = 15 HU noise."""
    return _bench().bench_case(case, shared_data / case / scan, shared_data, ["noise"], [path], draws=3, noise_hu=15.0)


def test_fixed_masks_bmd_repeats_within_one_percent(shared_data):
    """ts_abdomen_ct with its reference masks, three draws of σ = 15 HU noise: per level CV ≤ 1.5 %
    and bias ≤ 2 %, the category unchanged, and the reported SD of the right size."""
    rows = _three_noise_draws(shared_data, "ts_abdomen_ct", "ct.nii.gz", "fixed")
    levels = [r for r in rows if r["level"] in ("L1", "L2", "L3", "L4", "L5")]
    assert len(levels) == 5
    for r in levels:
        assert r["found_every_run"] and r["cv_pct"] <= 1.5 and abs(r["bias_pct"]) <= 2.0, r
        assert 0.5 <= r["reported_sd"] <= 3.0, r
    summary = next(r for r in rows if r["level"] == "summary")
    assert summary["category_stable"] and summary["cv_pct"] <= 1.5


def test_default_pipeline_repeats_on_a_contrast_ct(shared_data):
    """The full default pipeline on the contrast-enhanced 5 mm CT, three noise draws: the same levels
    in every run and the same category, and the L1+L2 summary within the issue's targets, CV and
    bias ≤ 2 % (measured 0.3 % and -1.3 %; 0.3 % and -3.0 % while the disc planes were chosen by
    their share of bone, L2 -5.0 %)."""
    rows = _three_noise_draws(shared_data, "abdomen_ct_contrast_5mm", "dicom", "full")
    assert all(r["found_every_run"] for r in rows)
    summary = next(r for r in rows if r["level"] == "summary")
    assert summary["category_stable"] and summary["cv_pct"] <= 2.0 and abs(summary["bias_pct"]) <= 2.0, summary
    assert summary["reported_sd"] > 0


def test_default_pipeline_repeats_on_a_lumbar_ct(shared_data):
    """The full default pipeline on ts_abdomen_ct, three noise draws: every level found in every run
    with its bias ≤ 2 % and CV ≤ 3 % (measured: bias ≤ 1.4 %, CV ≤ 2.4 %), the summary's CV ≤ 2 %.
    While the lumbosacral plane was chosen by its share of bone (a flat landscape: tilted 56° on the
    undisturbed scan, 47–50° on the noisy copies) S1 read 171 mg/cm³ on the one and about 145 on the
    others (bias -17 %, L5 -5.7 %); in the HU trough between the endplates it is 44–46° on all."""
    rows = _three_noise_draws(shared_data, "ts_abdomen_ct", "ct.nii.gz", "full")
    levels = [r for r in rows if r["level"] != "summary"]
    assert [r["level"] for r in levels] == ["L1", "L2", "L3", "L4", "L5", "S1"]
    for r in levels:
        assert r["found_every_run"] and abs(r["bias_pct"]) <= 2.0 and r["cv_pct"] <= 3.0, r
    summary = next(r for r in rows if r["level"] == "summary")
    assert summary["category_stable"] and summary["cv_pct"] <= 2.0, summary


def test_cta_names_the_same_levels_under_fresh_noise(shared_data):
    """The CTA under a σ = 15 HU noise draw (seed 4 of tools/bench_precision.py) once gained a
    vertebra at the top (two weak troughs split T1), and the rib count then named 13 thoracic levels,
    moving every name below by one. The levels and the naming must be those of the undisturbed scan."""
    import volbmd
    from volbmd.geometry import canonicalize
    from volbmd.io import load_volume

    bench = _bench()
    canon, _ = canonicalize(load_volume(shared_data / "cta_chest" / "ct.nii.gz"))
    base = volbmd.analyze(canon)
    noisy = volbmd.analyze(bench.disturb(canon, None, "noise", 4, 15.0)[0])
    assert [v.level for v in noisy.vertebrae] == [v.level for v in base.vertebrae]
    assert noisy.segmentation.naming["anatomy"] == "normal"


def test_report_carries_uncertainties(shared_data, tmp_path):
    import csv
    import json

    import volbmd

    report = volbmd.analyze(shared_data / "ts_abdomen_ct" / "ct.nii.gz")
    volbmd.write_outputs(report, tmp_path)
    data = json.loads((tmp_path / "report.json").read_text())
    for v in data["vertebrae"]:
        if v["bmd_mg_cm3"] is not None:
            assert 0 < v["bmd_sd_mg_cm3"] < 0.2 * v["bmd_mg_cm3"]
    assert data["summary"]["bmd_sd_mg_cm3"] > 0 and isinstance(data["summary"]["borderline"], bool)
    assert data["calibration"]["slope_intercept_cov"] is not None
    rows = list(csv.DictReader((tmp_path / "vertebrae.csv").open()))
    assert "bmd_sd_mg_cm3" in rows[0]
    assert "±" in (tmp_path / "report.html").read_text()


def test_cta_levels_keep_their_bmd_when_a_mask_runs_past_an_endplate(shared_data):
    """On a σ = 15 HU noise draw of the CTA (seed 0 of tools/bench_precision.py) T8's mask runs 6 mm
    past its upper endplate and T9's starts below its lower one: their ROIs took in the dense plates
    and read 13 % and 6 % high. The end guard weighs those slabs out: T6–T9 and T11 within 3 % of the
    undisturbed scan (measured: within 1.5 %), and the guard itself noted. (T10 read 3–6 % above the
    undisturbed scan on every draw: there the body's posterior wall moved, which no end guard sees.)
    Since the disc planes follow the HU trough between the endplates (not a bone mask), T8's mask no
    longer runs past its endplate on this draw; the guard still weighs out end slabs of T7 and T9
    (measured: T6–T11 within 2.7 %, T10 0.4 %)."""
    import volbmd
    from volbmd.geometry import canonicalize
    from volbmd.io import load_volume

    bench = _bench()
    canon, _ = canonicalize(load_volume(shared_data / "cta_chest" / "ct.nii.gz"))
    base = {v.level: v for v in volbmd.analyze(canon).vertebrae}
    noisy = {v.level: v for v in volbmd.analyze(bench.disturb(canon, None, "noise", 0, 15.0)[0]).vertebrae}
    for level in ("T6", "T7", "T8", "T9", "T11"):
        assert noisy[level].bmd_mg_cm3 == pytest.approx(base[level].bmd_mg_cm3, rel=0.03), level
    assert noisy["T7"].roi_ends_weighted and noisy["T9"].roi_ends_weighted


def test_a_bone_island_stays_out_on_a_repositioned_scan(shared_data):
    """ts_abdomen_ct's L1 holds a bone island. Resampled after a sub-voxel shift (seed 3 of
    tools/bench_precision.py, ≤ 1.5 mm) its peak falls from 650 to 397 HU above the marrow: with
    the exclusion at 400 HU it stayed in and L1 read 104 mg/cm³ instead of 83 (the full pipeline's
    shift CV of L1 was 8 %). It must be left out on the shifted scan too, and L1 read within 8 % (the
    six shift draws read 84.5–89.1 against 83.2: the island's blurred edge beyond the excluded voxels
    still counts)."""
    import volbmd
    from volbmd.geometry import canonicalize
    from volbmd.io import load_volume

    bench = _bench()
    canon, _ = canonicalize(load_volume(shared_data / "ts_abdomen_ct" / "ct.nii.gz"))
    base = {v.level: v for v in volbmd.analyze(canon).vertebrae}["L1"]
    moved = {v.level: v for v in volbmd.analyze(bench.disturb(canon, None, "shift", 3, 15.0)[0]).vertebrae}["L1"]
    assert base.dense_focus_ml and moved.dense_focus_ml
    assert moved.bmd_mg_cm3 == pytest.approx(base.bmd_mg_cm3, rel=0.08)

"""ACR categories (boundaries), level choice with replacement, L1 screen, threshold sets."""

from __future__ import annotations

import pytest

from volbmd.classify import LevelResult, acr_category, choose_levels, classify, l1_screen
from volbmd.config import ClassificationConfig, L1ScreenConfig, load_config, load_threshold_set
from volbmd.errors import ConfigError

ACR = load_threshold_set("acr")


@pytest.mark.parametrize(
    "bmd,category",
    [
        (120.0001, "normal"),
        (120.0, "low_bmd"),
        (100.0, "low_bmd"),
        (80.0, "low_bmd"),
        (79.9999, "osteoporosis"),
        (10.0, "osteoporosis"),
    ],
)
def test_acr_boundaries(bmd, category):
    assert acr_category(bmd, ACR) == category


def test_severe_needs_fracture():
    assert acr_category(70.0, ACR, fracture=True) == "severe_osteoporosis"
    assert acr_category(100.0, ACR, fracture=True) == "low_bmd"


def test_east_asian_threshold_set():
    ea = load_threshold_set("east-asian")
    assert acr_category(60.0, ea) == "low_bmd" and acr_category(49.0, ea) == "osteoporosis"
    with pytest.raises(ConfigError, match="unknown threshold set"):
        load_threshold_set("martian")


def test_threshold_sets_that_are_not_ordered_are_refused(tmp_path):
    (tmp_path / "swapped.yaml").write_text("name: swapped\nnormal_above_mg_cm3: 80\nosteoporosis_below_mg_cm3: 120\n")
    with pytest.raises(ConfigError, match="must not exceed"):
        load_threshold_set(str(tmp_path / "swapped.yaml"))
    (tmp_path / "negative.yaml").write_text("name: n\nnormal_above_mg_cm3: -5\nosteoporosis_below_mg_cm3: -10\n")
    with pytest.raises(ConfigError, match="greater than 0"):
        load_threshold_set(str(tmp_path / "negative.yaml"))


def _levels(**bmd_and_grade):
    return {lvl: LevelResult(lvl, v[0], v[1], list(v[2]) if len(v) > 2 else []) for lvl, v in bmd_and_grade.items()}


def test_mean_of_l1_l2():
    cls = classify(_levels(L1=(100.0, 0), L2=(140.0, 0), L3=(50.0, 0)), ACR, ClassificationConfig())
    assert cls.levels_used == ["L1", "L2"] and cls.bmd_mg_cm3_mean == 120.0 and cls.acr_category == "low_bmd"
    assert cls.notes == []


def test_fractured_level_replaced_and_reported():
    levels = _levels(L1=(60.0, 2), L2=(100.0, 0), L3=(110.0, 0))
    cls = classify(levels, ACR, ClassificationConfig())
    assert cls.levels_used == ["L2", "L3"] and cls.bmd_mg_cm3_mean == 105.0
    assert cls.notes == ["L1 fractured (Genant 2): replaced by L3"]
    assert cls.fractured_levels == ["L1"] and cls.max_genant_grade == 2


def test_missing_and_unmeasurable_levels_replaced():
    levels = _levels(L1=(None, None, ["empty_mask"]), L3=(70.0, 0), L4=(74.0, 0))
    cls = classify(levels, ACR, ClassificationConfig())
    assert cls.levels_used == ["L3", "L4"] and cls.acr_category == "osteoporosis"
    assert cls.notes[0].startswith("L1 not measurable: empty_mask") and cls.notes[1].startswith("L2 missing")


def test_cut_level_is_not_used():
    levels = _levels(L1=(90.0, None, ["cut_by_scan_edge:superior"]), L2=(100.0, 0), L3=(110.0, 0))
    assert classify(levels, ACR, ClassificationConfig()).levels_used == ["L2", "L3"]


def test_a_level_whose_roi_is_not_marrow_is_not_used():
    """A level flagged high_hu_spread (its ROI holds an endplate, cortex or a sclerotic focus: the
    CTA's cupped T11 read 166 HU against 101–131 for its neighbours) is replaced, and the note says
    why."""
    levels = _levels(L1=(135.0, 0, ["high_hu_spread:87_vs_47_hu"]), L2=(100.0, 0), L3=(110.0, 0))
    cls = classify(levels, ACR, ClassificationConfig())
    assert cls.levels_used == ["L2", "L3"] and cls.bmd_mg_cm3_mean == 105.0
    assert cls.notes[0].startswith("L1 not measurable: high_hu_spread")


def test_not_enough_levels():
    cls = classify(_levels(L1=(100.0, 0)), ACR, ClassificationConfig())
    assert cls.acr_category is None and cls.bmd_mg_cm3_mean is None
    assert "two valid lumbar levels" in cls.notes[-1]


def test_fracture_makes_osteoporosis_severe():
    cls = classify(_levels(L1=(60.0, 0), L2=(70.0, 0), L4=(70.0, 1)), ACR, ClassificationConfig())
    assert cls.acr_category == "severe_osteoporosis" and cls.fractured_levels == ["L4"]


@pytest.mark.parametrize(
    "hu,kvp,normalised,expected",
    [
        (110.0, 120, False, "osteoporosis_likely"),
        (110.1, 120, False, "osteoporosis_possible"),
        (160.0, 120, False, "osteoporosis_possible"),
        (180.0, 120, False, "indeterminate"),
        (200.1, 120, False, "osteoporosis_unlikely"),
        (150.0, 100, False, "not_applicable_kvp"),
        (150.0, 100, True, "osteoporosis_possible"),
        (150.0, None, False, "not_applicable_kvp"),
        (None, 120, False, None),
    ],
)
def test_l1_screen(hu, kvp, normalised, expected):
    assert l1_screen(hu, kvp, normalised, L1ScreenConfig()) == expected


def test_choose_levels_configurable():
    cfg = load_config(overrides={"classification": {"levels": ["L2", "L3"], "fallback_levels": ["L4"]}}).classification
    used, _ = choose_levels(_levels(L1=(1.0, 0), L2=(2.0, 0), L3=(3.0, 0)), cfg)
    assert used == ["L2", "L3"]
    with pytest.raises(ConfigError, match="unknown level names"):
        load_config(overrides={"classification": {"levels": ["L9"]}})


def test_pipeline_classifies_with_kvp_normalised_l1(esp_scan):
    """calibrate_and_classify: material conversion, L1 screen at 100 kVp normalised, summary keys."""
    import dataclasses

    from volbmd.measure import measure_vertebrae
    from volbmd.pipeline import calibrate_and_classify

    vol = dataclasses.replace(esp_scan.volume, metadata={**esp_scan.volume.metadata, "kvp": 100.0})
    result = measure_vertebrae(vol, esp_scan.labels)
    out = calibrate_and_classify(vol, esp_scan.labels, result, load_config())
    l1 = result.by_level()["L1"].trabecular_hu_mean
    assert out.summary["l1_hu_normalised_to_120kvp"] is True
    assert out.summary["l1_hu"] == pytest.approx(l1 / 1.05)
    assert out.summary["levels_used"] == ["L1", "L2"] and out.summary["material"] == "HA"
    assert any("normalised" in w for w in out.warnings)

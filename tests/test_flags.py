"""Segmentation flags are declared once (volbmd/flags.py): the warnings come from the codes, and
every flag the classical segmenter writes has a declared code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from volbmd.flags import SEGMENTATION_FLAGS, flag_code, is_warning

REFERENCE = json.loads((Path(__file__).parent / "data" / "reference_levels.json").read_text())["cases"]


@pytest.mark.parametrize(
    ("flag", "code", "warns"),
    [
        ("partial_fov:inferior", "partial_fov", True),
        ("transitional:13_rib_pairs (13 rib-bearing vertebrae from the first rib to the last)", "transitional", True),
        ("levels:provisional (no sacrum, first or last rib in view)", "levels:provisional", True),
        ("levels:sacrum_disagrees (the lowest vertebra is named L4)", "levels:sacrum_disagrees", True),
        ("levels:from_last_rib_and_first_rib", "levels:from", False),
        ("levels:single_landmark (last rib only)", "levels:single_landmark", False),
        ("something_new:detail", None, True),  # undeclared: said, not hidden
        ("levels:fromage", None, True),  # a code is matched whole (then ":", " (" or "_"), not as any prefix
    ],
)
def test_flag_codes(flag, code, warns):
    assert flag_code(flag) == code
    assert is_warning(flag) is warns


def test_every_classical_flag_is_declared(shared_data):
    from volbmd.io import load_volume
    from volbmd.segment.classical import segment_spine

    seen = set()
    for case in ("cta_chest", "abdomen_ct_contrast_5mm", "ts_abdomen_ct"):
        labels = segment_spine(load_volume(shared_data / REFERENCE[case]["scan"]))
        for flag in labels.metadata.get("flags", []):
            assert flag_code(flag) in SEGMENTATION_FLAGS, flag
            seen.add(flag_code(flag))
    assert {"partial_fov", "levels:from"} <= seen


def test_report_warnings_follow_the_codes(esp_scan):
    """A provisional naming (no landmark in the phantom's view) is a warning; which landmarks named
    the levels is not."""
    import volbmd

    report = volbmd.analyze(esp_scan.volume)
    flags = report.segmentation.flags
    warned = [w.removeprefix("segmentation: ") for w in report.qa.warnings if w.startswith("segmentation: ")]
    assert warned == [f for f in flags if is_warning(f)]
    assert any(f.startswith("levels:provisional") for f in warned), flags

"""qa.png: what a reviewer needs is in the picture, at true proportions."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

import volbmd
from volbmd.demo import GivenLabels
from volbmd.geometry import canonicalize
from volbmd.phantoms import make_spine_phantom
from volbmd.report.figures import _OUTLINE_RGB, _ROI_RGB, CATEGORY_COLOURS, _rgb, _sagittal, render_qa_png
from volbmd.volume import LabelMap


def _render(spacing_mm):
    p = make_spine_phantom(("L1", "L2"), spacing_mm=spacing_mm, trabecular_hu={"L1": 60.0, "L2": 180.0}, seed=1)
    report = volbmd.analyze(p.volume, segmenter=GivenLabels(p.labels))
    art = report.artifacts
    canon, _ = canonicalize(p.volume, copy=False)
    canon_labels, _ = canonicalize(p.labels, copy=False)
    bodies_c, rois_c = art.result.mask_volumes(canon.shape, dtype=np.uint8)
    bodies = LabelMap.on_grid_of(canon, bodies_c, p.labels.labels)
    rois = LabelMap.on_grid_of(canon, rois_c, p.labels.labels)
    from volbmd.config import load_threshold_set

    thresholds = load_threshold_set(art.config.classification.threshold_set)
    png = render_qa_png(canon, canon_labels, bodies, rois, report, thresholds, masks=art.result.masks)
    return report, canon, canon_labels, rois, thresholds, art, png


def _colour_count(rgb: np.ndarray, colour) -> int:
    return int(np.all(rgb == np.asarray(colour, np.uint8), axis=-1).sum())


def test_qa_picture_shows_rois_outlines_and_categories():
    report, *_, png = _render((1.5, 0.8, 0.8))
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert rgb.shape[0] > 500 and rgb.shape[1] > 900  # sagittal view plus two axial views
    assert _colour_count(rgb, _OUTLINE_RGB) > 400  # body outlines on the sagittal and axial views
    # the ROI is blended over the scan: bluish pixels (blue well above red) are present
    blue = (rgb[..., 2].astype(int) - rgb[..., 0].astype(int)) > 60
    assert blue.sum() > 2000
    cats = {v.level: v for v in report.vertebrae}
    assert cats["L1"].bmd_mg_cm3 < 80 < 120 < cats["L2"].bmd_mg_cm3  # one osteoporotic, one normal level
    # each level's label box on the sagittal view has its category's colour
    assert _colour_count(rgb, _rgb(CATEGORY_COLOURS["osteoporosis"])) > 50
    assert _colour_count(rgb, _rgb(CATEGORY_COLOURS["normal"])) > 50
    assert _ROI_RGB != _OUTLINE_RGB


def test_sagittal_view_keeps_true_proportions_with_thick_slices():
    for spacing in ((3.0, 0.8, 0.8), (0.8, 0.8, 0.8)):
        report, canon, canon_labels, rois, thresholds, art, _ = _render(spacing)
        panel, marks, px_per_mm = _sagittal(canon, canon_labels, rois, report, thresholds, art.result.masks)
        height_mm = canon.shape[0] * canon.spacing_mm[0]
        assert abs(panel.shape[0] - height_mm * px_per_mm) <= 1  # the whole height, at px_per_mm
        # the width is cropped to the spine (70 mm in front of the bodies, 80 mm behind), at the same scale
        body_y = np.concatenate([np.argwhere(lm.body)[:, 1] + lm.box[1].start for lm in art.result.masks.values()])
        sy = canon.spacing_mm[1]
        expected_mm = (min(canon.shape[1], body_y.max() + 1 + int(80 / sy)) - max(0, body_y.min() - int(70 / sy))) * sy
        assert abs(panel.shape[1] - expected_mm * px_per_mm) <= 1
        assert [m[0].split()[0] for m in marks] == ["L1", "L2"]
        # L1 lies above L2: its label sits higher in the picture (superior is up)
        assert marks[0][2] < marks[1][2]


def test_title_says_why_there_is_no_category():
    """Calibrated levels without two valid lumbar ones: the title says why, not "no calibration"."""
    from volbmd.report.figures import _title

    p = make_spine_phantom(("T11", "T12"), seed=2)
    report = volbmd.analyze(p.volume, segmenter=GivenLabels(p.labels))
    assert report.calibration.method != "none" and report.summary.bmd_mg_cm3_mean is None
    assert _title(report).startswith("no ACR category (two valid lumbar levels needed)")


def test_title_says_when_the_level_names_are_a_guess_or_uncertain():
    """A reviewer reads the level names off qa.png: when they are provisional (no landmark in view)
    or uncertain (naming confidence under 0.5, which qa.warnings also says), so does its title."""
    from volbmd.report.figures import _title

    p = make_spine_phantom(("L1", "L2"), seed=2)
    report = volbmd.analyze(p.volume, segmenter=GivenLabels(p.labels))
    assert "level names" not in _title(report)  # given labels: nothing to doubt
    guessed = report.model_copy(deep=True)
    guessed.segmentation.naming = {"method": "provisional", "confidence": 0.1}
    assert _title(guessed).endswith("· level names a guess (no landmark in view)")
    unsure = report.model_copy(deep=True)
    unsure.segmentation.naming = {"method": "joint landmarks", "confidence": 0.45}
    assert _title(unsure).endswith("· level names uncertain (0.45)")
    unsure.segmentation.naming["confidence"] = 0.83
    assert "level names" not in _title(unsure)

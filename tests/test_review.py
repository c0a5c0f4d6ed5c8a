"""Review logic without a viewer, the napari reader and sample data, and `npe2 validate`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_cli import assert_clean_error, run

from volbmd.io import load_volume
from volbmd.review import ReviewSession


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo_run") / "run"
    r = run("demo", "--out", out)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture
def fresh_run(demo_run, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(demo_run, target)
    return target


def test_session_rows_and_decisions(fresh_run):
    s = ReviewSession(fresh_run)
    rows = s.rows()
    assert [r["level"] for r in rows] == ["L1", "L2", "L3"]
    assert [r["category"] for r in rows] == ["osteoporosis", "low_bmd", "normal"]
    assert all(r["decision"] == "pending" for r in rows)
    s.set_decision("L1", "rejected")
    with pytest.raises(ValueError):
        s.set_decision("L1", "maybe")
    z, y, x = s.level_centre("L2")
    assert s.labels.array[int(round(z)), int(round(y)), int(round(x))] == s.labels.labels["L2"]


def test_reject_recompute_and_save(fresh_run):
    s = ReviewSession(fresh_run)
    s.set_decision("L1", "rejected")
    edited = s.labels.array.copy()
    vid = s.labels.labels["L2"]
    zs = np.nonzero(edited == vid)[0]
    edited[(edited == vid) & (np.arange(edited.shape[0])[:, None, None] > np.median(zs))] = 0  # cut L2 in half
    assert s.update_labels(edited) == {"L2"}
    assert s.recompute() == ["L2"]
    summary = s.report["summary"]
    assert summary["levels_used"] == ["L2", "L3"]
    assert "L1 not measurable: rejected_by_reviewer: replaced by L3" in summary["classification_notes"]
    paths = s.save(reviewer="test")
    assert set(paths) == {"labels_reviewed.nii.gz", "review.json", "report.json"}
    scan = load_volume(fresh_run / "scan.nii.gz")
    assert load_volume(fresh_run / "labels_reviewed.nii.gz").geometry.matches(scan.geometry)
    record = json.loads((fresh_run / "review.json").read_text())
    assert record["decisions"]["L1"] == "rejected" and record["edited_levels"] == ["L2"] and record["saved"]
    report = json.loads((fresh_run / "report.json").read_text())
    assert report["review"]["reviewer"] == "test" and report["summary"]["levels_used"] == ["L2", "L3"]
    l2 = next(v for v in report["vertebrae"] if v["level"] == "L2")
    assert (
        l2["body_volume_ml"]
        < 0.7
        * next(v for v in json.loads((fresh_run / "report.json").read_text())["vertebrae"] if v["level"] == "L3")[
            "body_volume_ml"
        ]
    )
    again = ReviewSession(fresh_run)  # decisions and corrected labels come back
    assert again.decisions["L1"] == "rejected"
    assert (again.labels.array == again.labels.labels["L2"]).sum() == (s.labels.array == vid).sum()


def test_rois_follow_a_recomputed_level(fresh_run):
    """The session shows the run's trabecular ROIs (what each BMD was measured on); a level edited
    and recomputed gets its new ROI and ROI volume, the others keep theirs; a run folder without
    rois.nii.gz reviews without them."""
    s = ReviewSession(fresh_run)
    before = s.rois.copy()
    l1, l2 = s.labels.labels["L1"], s.labels.labels["L2"]
    assert (before == l1).any() and (before == l2).any()
    assert not ((before == l2) & (s.labels.array != l2)).any()  # an ROI lies inside its vertebra
    edited = s.labels.array.copy()
    zs = np.nonzero(edited == l2)[0]
    edited[(edited == l2) & (np.arange(edited.shape[0])[:, None, None] > np.median(zs))] = 0  # cut L2 in half
    s.update_labels(edited)
    assert s.recompute() == ["L2"]
    after = s.rois
    assert 0 < (after == l2).sum() < 0.7 * (before == l2).sum()
    assert not ((after == l2) & (s.labels.array != l2)).any()
    assert np.array_equal(after == l1, before == l1)
    record = next(v for v in s.report["vertebrae"] if v["level"] == "L2")
    voxel_ml = s.scan.voxel_volume_mm3 / 1000.0
    assert record["roi_volume_ml"] == pytest.approx((after == l2).sum() * voxel_ml)
    (fresh_run / "rois.nii.gz").unlink()
    bare = ReviewSession(fresh_run)
    assert bare.rois is None
    bare.update_labels(edited)
    assert bare.recompute() == ["L2"]


def test_recompute_measures_as_the_run_did(fresh_run):
    """An edited level is measured again with the run's own settings (its config.yaml), not the
    defaults: a run made with the mid-slab ellipse ROI keeps that ROI for the level recomputed."""
    config = fresh_run / "config.yaml"
    config.write_text(config.read_text().replace("roi: eroded_body", "roi: mid_slab_ellipse"))
    s = ReviewSession(fresh_run)
    l2 = s.labels.labels["L2"]
    before = int((s.rois == l2).sum())  # measured with the eroded body when the demo ran
    edited = s.labels.array.copy()
    z = np.nonzero(edited == l2)[0].min()
    edited[z][edited[z] == l2] = 0  # one slice less at its lower end
    s.update_labels(edited)
    assert s.recompute() == ["L2"]
    assert 0 < (s.rois == l2).sum() < 0.6 * before


def test_recompute_redoes_the_uncertainties(fresh_run):
    """Recompute gives an edited level its own SD (the reviewer's mask as given masks: noise and
    calibration) and redoes the summary's SD and borderline note the way the run formed them: with
    nothing edited they come out as the run wrote them."""
    from volbmd.calibrate.base import Calibration
    from volbmd.classify import borderline_notes
    from volbmd.config import load_threshold_set

    s = ReviewSession(fresh_run)
    run_summary = dict(s.report["summary"])
    run_l2 = next(v for v in s.report["vertebrae"] if v["level"] == "L2")["bmd_sd_mg_cm3"]
    s.recompute()
    assert s.report["summary"]["bmd_sd_mg_cm3"] == pytest.approx(run_summary["bmd_sd_mg_cm3"], rel=1e-9)
    assert s.report["summary"]["borderline"] == run_summary["borderline"]
    cal = s.report["calibration"]
    calibration = Calibration(**{k: cal[k] for k in Calibration.model_fields if k in cal})
    # each level's HU error read back from its stored SD gives the run's own summary SD
    assert s._summary_sd(calibration, run_summary["levels_used"]) == pytest.approx(run_summary["bmd_sd_mg_cm3"], rel=1e-9)
    l2 = s.labels.labels["L2"]
    edited = s.labels.array.copy()
    zs = np.nonzero(edited == l2)[0]
    edited[(edited == l2) & (np.arange(edited.shape[0])[:, None, None] > np.median(zs))] = 0  # cut L2 in half
    s.update_labels(edited)
    s.recompute()
    record = next(v for v in s.report["vertebrae"] if v["level"] == "L2")
    assert record["bmd_sd_mg_cm3"] > run_l2  # fewer voxels, a wider mean
    summary = s.report["summary"]
    assert summary["bmd_sd_mg_cm3"] != pytest.approx(run_summary["bmd_sd_mg_cm3"], rel=1e-6)
    notes = borderline_notes(summary["bmd_mg_cm3_mean"], summary["bmd_sd_mg_cm3"], load_threshold_set("acr"))
    assert summary["borderline"] == bool(notes) and all(n in summary["classification_notes"] for n in notes)


def test_shift_levels(fresh_run):
    s = ReviewSession(fresh_run)
    before = (s.labels.array == s.labels.labels["L1"]).sum()
    s.shift_levels(-1)
    assert [r["level"] for r in s.rows()] == ["T12", "L1", "L2"]
    assert (s.labels.array == s.labels.labels["T12"]).sum() == before
    assert s.edited == {"T12", "L1", "L2"}
    with pytest.raises(ValueError):
        s.shift_levels(-30)


def test_not_a_run(tmp_path):
    from volbmd.errors import InputError

    with pytest.raises(InputError, match="not a volbmd run folder"):
        ReviewSession(tmp_path)
    assert_clean_error(run("review", tmp_path), "not a volbmd run folder")


def test_reader_scan_and_run(demo_run):
    from volbmd.napari._reader import get_reader

    reader = get_reader(str(demo_run / "scan.nii.gz"))
    ((data, kwargs, kind),) = reader(str(demo_run / "scan.nii.gz"))
    scan = load_volume(demo_run / "scan.nii.gz")
    assert kind == "image" and kwargs["scale"] == scan.spacing_mm and kwargs["contrast_limits"] == (-250.0, 1250.0)
    assert kwargs["translate"] == scan.origin_lps_mm[::-1]
    layers = get_reader(str(demo_run))(str(demo_run))
    assert [k for _, _, k in layers] == ["image", "labels", "labels", "labels"]
    assert [kw["name"] for _, kw, _ in layers] == ["scan", "labels", "bodies", "rois"]
    assert get_reader(str(demo_run / "report.json")) is None


def test_sample_data():
    from volbmd.napari._sample import demo_phantom

    (img, ikw, ik), (lab, lkw, lk) = demo_phantom()
    assert ik == "image" and lk == "labels" and img.shape == lab.shape and ikw["scale"] == lkw["scale"]


def test_npe2_manifest_validates():
    npe2 = Path(sys.executable).parent / "npe2"
    result = subprocess.run([str(npe2), "validate", "volbmd"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "valid" in result.stdout + result.stderr

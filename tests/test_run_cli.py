"""`volbmd run --segmenter masks`: report.json and vertebrae.csv as users and pipelines read them."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from test_cli import assert_clean_error, run

from volbmd.io import load_volume, write_volume
from volbmd.labels import load_label_scheme
from volbmd.volume import LabelMap

REPORT_KEYS = {"schema_version", "volbmd_version", "input", "segmentation", "calibration", "vertebrae", "summary", "qa"}
VERTEBRA_KEYS = {
    "level",
    "body_volume_ml",
    "trabecular_hu_mean",
    "trabecular_hu_median",
    "trabecular_hu_sd",
    "trabecular_n_voxels",
    "bmd_mg_cm3",
    "heights_mm",
    "genant_grade",
    "flags",
}


@pytest.fixture(scope="module")
def phantom_files(tmp_path_factory):
    from volbmd.phantoms import make_spine_phantom

    folder = tmp_path_factory.mktemp("phantom")
    p = make_spine_phantom(noise_hu=5.0, seed=1)
    write_volume(p.volume, folder / "scan.nii.gz")
    write_volume(p.labels, folder / "labels_verse.nii.gz")
    ts = load_label_scheme("totalseg")
    ts_arr = np.zeros_like(p.labels.array)
    for level, vid in p.labels.labels.items():
        ts_arr[p.labels.array == vid] = ts[level]
    write_volume(p.labels.with_array(ts_arr), folder / "labels_ts.nii.gz")
    per_level = folder / "per_level"
    for level, vid in p.labels.labels.items():
        write_volume(p.labels.with_array((p.labels.array == vid).astype(np.uint8)), per_level / f"vertebrae_{level}.nii.gz")
    return folder, p


def test_run_writes_report_with_contract_keys(phantom_files, tmp_path):
    folder, p = phantom_files
    out = tmp_path / "out"
    result = run(
        "run",
        folder / "scan.nii.gz",
        "--segmenter",
        "masks",
        "--masks",
        folder / "labels_verse.nii.gz",
        "--out",
        out,
        "--levels",
        "T12,L1,L2,L3,L4",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert REPORT_KEYS <= set(report)
    assert report["calibration"]["method"] == "internal"  # the phantom has air, fat and muscle
    assert report["segmentation"] == {"backend": "masks", "levels_found": ["T12", "L1", "L2", "L3"], "flags": []}
    levels = {v["level"]: v for v in report["vertebrae"]}
    assert list(levels) == ["T12", "L1", "L2", "L3", "L4"]
    for v in report["vertebrae"]:
        assert VERTEBRA_KEYS <= set(v)
        assert (v["bmd_mg_cm3"] is None) == (v["level"] == "L4")
    assert levels["L4"]["flags"] == ["empty_mask"]
    for level in ("T12", "L1", "L2", "L3"):
        assert levels[level]["trabecular_hu_median"] == pytest.approx(p.trabecular_hu[level], abs=2)
    assert report["summary"]["l1_hu"] == pytest.approx(p.trabecular_hu["L1"], abs=2)
    rows = list(csv.DictReader((out / "vertebrae.csv").open()))
    assert [r["level"] for r in rows] == list(levels) and rows[-1]["flags"] == "empty_mask"
    labels = load_volume(out / "labels.nii.gz")
    assert labels.geometry.matches(p.volume.geometry)


def test_totalseg_and_per_level_masks_give_same_numbers(phantom_files, tmp_path):
    folder, _ = phantom_files
    reports = []
    for name, extra in (
        ("ts", ["--masks", folder / "labels_ts.nii.gz", "--label-scheme", "totalseg"]),
        ("dir", ["--masks", folder / "per_level"]),
    ):
        result = run("run", folder / "scan.nii.gz", "--out", tmp_path / name, *extra)
        assert result.returncode == 0, result.stderr
        reports.append(json.loads((tmp_path / name / "report.json").read_text()))
    first, second = ([(v["level"], v["trabecular_hu_mean"]) for v in r["vertebrae"]] for r in reports)
    assert first == second and len(first) == 4


def test_run_bad_inputs(phantom_files, tmp_path):
    folder, _ = phantom_files
    other = LabelMap(array=np.zeros((6, 6, 6), np.int16), spacing_mm=(1, 1, 1), labels={})
    write_volume(other, tmp_path / "wrong_grid.nii.gz")
    out = tmp_path / "out"
    r = run("run", folder / "scan.nii.gz", "--masks", tmp_path / "wrong_grid.nii.gz", "--out", out)
    assert_clean_error(r, "mask grid does not match the scan grid: size (6, 6, 6) (x,y,z) against", "wrong_grid.nii.gz")
    r = run(
        "run", folder / "scan.nii.gz", "--masks", folder / "labels_verse.nii.gz", "--label-scheme", "totalseg", "--out", out
    )
    assert_clean_error(r, "no vertebra labels of the 'totalseg' scheme")
    # a TotalSegmentator multilabel read with the default VerSe ids once gave "T13" and "S1"
    r = run("run", folder / "scan.nii.gz", "--masks", folder / "labels_ts.nii.gz", "--out", out)
    assert_clean_error(r, "'verse' scheme", "pass --label-scheme totalseg")
    r = run("run", folder / "scan.nii.gz", "--segmenter", "masks", "--out", out)
    assert_clean_error(r, "--masks")
    r = run("run", folder / "scan.nii.gz", "--segmenter", "nnunet", "--out", out)
    assert_clean_error(r, "--model")
    r = run("run", folder / "scan.nii.gz", "--masks", folder / "labels_verse.nii.gz", "--roi", "sphere", "--out", out)
    assert_clean_error(r, "measurement.roi")
    r = run("run", folder / "scan.nii.gz", "--masks", folder / "labels_verse.nii.gz", "--levels", "L1,X9", "--out", out)
    assert_clean_error(r, "X9")
    r = run("run", folder / "scan.nii.gz", "--masks", folder / "labels_verse.nii.gz", "--device", "tpu", "--out", out)
    assert_clean_error(r, "--device", "tpu")
    assert not out.exists() or list(out.iterdir()) == []


def test_cortical_depth_below_one_voxel_warns(phantom_files, tmp_path):
    folder, _ = phantom_files
    result = run(
        "run",
        folder / "scan.nii.gz",
        "--masks",
        folder / "labels_verse.nii.gz",
        "--cortical-depth-mm",
        "0",
        "--out",
        tmp_path / "o",
    )
    assert result.returncode == 0, result.stderr
    warnings = json.loads((tmp_path / "o" / "report.json").read_text())["qa"]["warnings"]
    assert any("cortical depth 0 mm is less than one voxel" in w for w in warnings), warnings


def test_report_carries_no_patient_identifiers(tmp_path):
    from dicom_factory import write_ct_series

    from volbmd.phantoms import make_spine_phantom

    p = make_spine_phantom(levels=("L1", "L2"), spacing_mm=(2.0, 0.8, 0.8))
    series = tmp_path / "DOE_JANE" / "series"
    write_ct_series(
        series,
        p.volume.array,
        spacing_mm=p.volume.spacing_mm,
        origin=p.volume.origin_lps_mm,
        patient_name="Doe^Jane",
        patient_id="PID-12345",
    )
    scan = load_volume(series)
    write_volume(LabelMap.on_grid_of(scan, p.labels.array, p.labels.labels), tmp_path / "labels.nii.gz")
    out = tmp_path / "out"
    result = run("run", series, "--masks", tmp_path / "labels.nii.gz", "--out", out)
    assert result.returncode == 0, result.stderr
    text = (out / "report.json").read_text() + (out / "vertebrae.csv").read_text()
    for secret in ("Doe", "DOE_JANE", "PID-12345", "19500101"):
        assert secret not in text
    report = json.loads((out / "report.json").read_text())
    assert report["input"]["kvp"] == 120.0
    assert report["vertebrae"][0]["trabecular_hu_median"] == pytest.approx(p.trabecular_hu["L1"])


def test_run_without_calibration_reports_hu_only(phantom_files, tmp_path):
    folder, _ = phantom_files
    cfg = tmp_path / "hu_only.yaml"
    cfg.write_text("calibration:\n  internal:\n    enabled: false\n")
    result = run(
        "run", folder / "scan.nii.gz", "--masks", folder / "labels_verse.nii.gz", "--config", cfg, "--out", tmp_path / "o"
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["calibration"]["method"] == "none"
    assert all(v["bmd_mg_cm3"] is None for v in report["vertebrae"])
    assert report["summary"]["acr_category"] is None and report["summary"]["l1_hu"] is not None


def test_acquisition_facts_for_nifti_and_readable_console(phantom_files, tmp_path):
    """NIfTI keeps no kVp: without --kvp the L1 screen cannot apply, with it it does. The console
    table is not cut at 80 columns when stdout is not a terminal, and speaks words, not codes."""
    folder, _ = phantom_files
    args = ["run", folder / "scan.nii.gz", "--masks", folder / "labels_verse.nii.gz"]
    plain = run(*args, "--out", tmp_path / "a")
    given = run(*args, "--kvp", "120", "--contrast-phase", "portal_venous", "--out", tmp_path / "b")
    assert plain.returncode == 0 and given.returncode == 0, plain.stderr + given.stderr
    a = json.loads((tmp_path / "a" / "report.json").read_text())
    b = json.loads((tmp_path / "b" / "report.json").read_text())
    assert a["summary"]["l1_screen"] == "not_applicable_kvp" and a["input"]["kvp"] is None
    assert b["input"]["kvp"] == 120 and b["summary"]["l1_screen"] not in (None, "not_applicable_kvp")
    assert b["input"]["contrast_phase"] == "portal_venous"
    assert any("contrast" in w for w in b["qa"]["warnings"]), b["qa"]["warnings"]
    lines = given.stdout.splitlines()
    assert max(len(line) for line in lines) > 80 and not any("…" in line for line in lines)
    assert "L1 screen" in given.stdout and "_" not in given.stdout.split("L1 screen", 1)[1].splitlines()[0]
    category = b["summary"]["acr_category"]
    if category:
        assert category.replace("low_bmd", "low BMD").replace("_", " ") in given.stdout
    assert_clean_error(run(*args, "--kvp", "5000", "--out", tmp_path / "c"), "--kvp")

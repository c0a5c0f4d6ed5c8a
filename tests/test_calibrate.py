"""Calibration: the Mindways golden vector, single-material fits and gates, phantom and internal
calibration on the digital ESP-like phantom, stored calibrations, corrections."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_cli import assert_clean_error, run

from volbmd.calibrate.base import ScannerInfo, load_calibration, save_calibration
from volbmd.calibrate.corrections import (
    contrast_phase_from_aorta,
    convert_density,
    k2hpo4_per_ha,
    kvp_factor,
    normalise_hu_to_120kvp,
)
from volbmd.calibrate.internal import internal_calibration
from volbmd.calibrate.phantom import (
    PhantomDefinition,
    calibrate_from_hu,
    find_rods,
    load_phantom,
    rod_hu_from_mask,
    shipped_phantoms,
)
from volbmd.config import CalibrationConfig
from volbmd.errors import ConfigError, InputError
from volbmd.measure import measure_vertebrae

GOLDEN_HU = [-69.549, -35.378, 176.712, 345.738, 462.936]  # rods A–E


def test_mindways_golden_vector():
    cal = calibrate_from_hu(load_phantom("mindways-model3"), GOLDEN_HU)
    d = cal.details
    assert d["sigma_ref"] == pytest.approx(1.46696, abs=1e-4)
    assert d["beta_ref"] == pytest.approx(-1009.750, abs=1e-3)
    assert d["sigma_ct"] == pytest.approx(1.24956, abs=1e-4)
    assert d["beta_ct"] == pytest.approx(-10.150, abs=1e-3)
    assert cal.slope == pytest.approx(0.80028, abs=1e-4)
    assert cal.intercept == pytest.approx(8.1229, abs=1e-4)
    assert d["r"] == pytest.approx(0.99985, abs=1e-4)
    assert cal.material == "K2HPO4" and cal.model == "mindways"


def test_shipped_phantoms_load():
    names = shipped_phantoms()
    assert {"mindways-model3", "qrm-bdc-3rod", "qrm-bdc-6rod", "bmas200", "siemens-osteo", "esp"} <= set(names)
    densities = {n: [r.density_mg_cm3 for r in load_phantom(n).rods] for n in names}
    assert densities["qrm-bdc-3rod"] == [100, 400, 800]
    assert densities["qrm-bdc-6rod"] == [0, 100, 200, 400, 600, 800]
    assert densities["bmas200"] == [0, 50, 100, 150, 200]
    assert densities["siemens-osteo"] == [0, 200]


def test_single_material_fit_recovers_line():
    phantom = load_phantom("qrm-bdc-6rod")
    rho = np.array([r.density_mg_cm3 for r in phantom.rods])
    hu = 1.3 * rho + 12.0
    cal = calibrate_from_hu(phantom, hu)
    assert cal.slope == pytest.approx(1 / 1.3) and cal.intercept == pytest.approx(-12.0 / 1.3)
    assert cal.r2 == pytest.approx(1.0) and cal.warnings == []
    assert all(abs(r.residual_mg_cm3) < 1e-9 for r in cal.rods)
    assert cal.to_density(1.3 * 150 + 12.0) == pytest.approx(150.0)


def test_r2_gates_warn_and_fail():
    phantom = load_phantom("qrm-bdc-6rod")
    rho = np.array([r.density_mg_cm3 for r in phantom.rods])
    wobble = np.array([0, 1, -1, 1, -1, 0]) * 60.0  # 1 − R² ≈ 0.02–0.10: warned
    cal = calibrate_from_hu(phantom, 1.2 * rho + wobble)
    assert 0.02 < 1 - cal.r2 < 0.10 and "R²" in cal.warnings[0]
    with pytest.raises(InputError, match="fit too poor"):
        calibrate_from_hu(phantom, 1.2 * rho + wobble * 3)


@pytest.mark.parametrize(
    "hu,match",
    [
        ([100.0], "1 rod HU values given"),
        ([0.0, np.nan, 1, 2, 3], "finite"),
        ([1, 2, 3], "3 rod HU values given, phantom 'bmas200' has 5"),
    ],
)
def test_bad_rod_values(hu, match):
    with pytest.raises(InputError, match=match):
        calibrate_from_hu(load_phantom("bmas200"), hu)


def test_unknown_phantom_and_bad_certificate(tmp_path):
    with pytest.raises(ConfigError, match="unknown phantom 'nope'"):
        load_phantom("nope")
    cert = tmp_path / "mine.yaml"
    cert.write_text("name: mine\nmaterial: HA\nrods:\n  - {name: a, density_mg_cm3: 10}\n")
    with pytest.raises(ConfigError, match="rods"):
        load_phantom(cert)
    cert.write_text(
        "name: mine\nmaterial: HA\nmodel: mindways\nrods:\n  - {name: a, density_mg_cm3: 10}\n  - {name: b, density_mg_cm3: 20}\n"
    )
    with pytest.raises(ConfigError, match="water_mg_cm3"):
        load_phantom(cert)
    cert.write_text(
        "name: mine\nmaterial: HA\nrods:\n  - {name: a, density_mg_cm3: 0}\n  - {name: b, density_mg_cm3: 300}\n"
    )
    assert isinstance(load_phantom(cert), PhantomDefinition)


def test_mindways_order_is_by_expected_hu():
    order = load_phantom("mindways-model3").expected_hu_order()
    assert [load_phantom("mindways-model3").rods[i].name for i in order] == ["A", "B", "C", "D", "E"]


# ----------------------------------------------------------------------------- digital phantom


def test_rods_found_automatically_and_from_mask(esp_scan):
    phantom = load_phantom("bmas200")
    auto_hu, auto_n, _ = find_rods(esp_scan.volume, phantom)
    mask_hu, _ = rod_hu_from_mask(esp_scan.volume, esp_scan.rods, 5)
    truth = [esp_scan.gain * r.density_mg_cm3 / esp_scan.ha_mg_cm3_per_hu + esp_scan.offset_hu for r in phantom.rods]
    assert np.allclose(auto_hu, truth, atol=1.5) and np.allclose(mask_hu, truth, atol=1.5)
    assert all(n > 1000 for n in auto_n)
    with pytest.raises(InputError, match="found 5 rod-like inserts, phantom 'qrm-bdc-3rod' has 3"):
        find_rods(esp_scan.volume, load_phantom("qrm-bdc-3rod"))


@pytest.mark.parametrize("source", ["auto", "mask"])
def test_phantom_calibration_recovers_esp_densities_within_1_percent(esp_scan, source):
    phantom = load_phantom("bmas200")
    hu = (
        find_rods(esp_scan.volume, phantom)[0]
        if source == "auto"
        else rod_hu_from_mask(esp_scan.volume, esp_scan.rods, 5)[0]
    )
    cal = calibrate_from_hu(phantom, hu)
    result = measure_vertebrae(esp_scan.volume, esp_scan.labels)
    for m in result.levels:
        truth = esp_scan.trabecular_mg_cm3[m.level]
        assert cal.to_density(m.trabecular_hu_mean) == pytest.approx(truth, rel=0.01)


def test_internal_calibration_within_5_percent(esp_scan):
    cal = internal_calibration(esp_scan.volume, esp_scan.labels)
    assert cal.method == "internal" and cal.material == "HA"
    assert set(cal.reference_tissues) == {"air", "fat", "muscle", "blood"}
    for tissue, nominal in (("air", -1000), ("fat", -100), ("muscle", 50), ("blood", 40)):
        measured = esp_scan.gain * nominal + esp_scan.offset_hu
        assert cal.reference_tissues[tissue]["hu"] == pytest.approx(measured, abs=4)
    assert cal.reference_tissues["blood"]["contrast_phase"] == "native"
    for m in measure_vertebrae(esp_scan.volume, esp_scan.labels).levels:
        assert cal.to_density(m.trabecular_hu_mean) == pytest.approx(esp_scan.trabecular_mg_cm3[m.level], rel=0.05)


def test_internal_calibration_leaves_out_enhanced_blood():
    from volbmd.phantoms import make_esp_phantom

    arterial = make_esp_phantom(aorta_true_hu=250.0, seed=2)
    cal = internal_calibration(arterial.volume, arterial.labels)
    assert cal.reference_tissues["blood"]["contrast_phase"] == "arterial"
    assert cal.details["n_tissues"] == 3 and any("left out" in w for w in cal.warnings)
    for m in measure_vertebrae(arterial.volume, arterial.labels).levels:
        assert cal.to_density(m.trabecular_hu_mean) == pytest.approx(arterial.trabecular_mg_cm3[m.level], rel=0.05)


def test_dicom_contrast_agent_leaves_out_blood(esp_scan):
    cal = internal_calibration(esp_scan.volume, esp_scan.labels, contrast_known=True)
    assert cal.details["n_tissues"] == 3 and any("left out" in w for w in cal.warnings)


def test_internal_calibration_without_landmarks_is_none():
    from volbmd.volume import Volume

    flat = Volume(array=np.zeros((10, 20, 20), np.int16), spacing_mm=(1, 1, 1))
    cal = internal_calibration(flat, None)
    assert cal.method == "none" and "not possible" in cal.warnings[0]


# ----------------------------------------------------------------------------- corrections


def test_kvp_and_material_conversions():
    cfg = CalibrationConfig()
    assert (
        kvp_factor(120, cfg) == 1.0
        and kvp_factor(100, cfg) == pytest.approx(1.05)
        and kvp_factor(140, cfg) == pytest.approx(0.93)
    )
    hu, applied = normalise_hu_to_120kvp(105.0, 100, cfg)
    assert applied and hu == pytest.approx(100.0)
    assert normalise_hu_to_120kvp(100.0, 120, cfg) == (100.0, False)
    assert k2hpo4_per_ha(80, cfg) == pytest.approx(0.86) and k2hpo4_per_ha(140, cfg) == pytest.approx(0.81)
    assert k2hpo4_per_ha(110, cfg) == pytest.approx(0.835)
    assert convert_density(100.0, "HA", "K2HPO4", 80, cfg) == pytest.approx(86.0)
    assert convert_density(86.0, "K2HPO4", "HA", 80, cfg) == pytest.approx(100.0)
    assert convert_density(50.0, "HA", "HA", 80, cfg) == 50.0


@pytest.mark.parametrize(
    "aorta,phase",
    [(40, "native"), (79.9, "native"), (150, "portal_venous"), (200, "portal_venous"), (250, "arterial"), (None, None)],
)
def test_contrast_phase_rule(aorta, phase):
    assert contrast_phase_from_aorta(aorta) == phase


def test_calibration_file_round_trip_and_errors(tmp_path):
    cal = calibrate_from_hu(
        load_phantom("bmas200"), [8, 73, 138, 203, 268], scanner=ScannerInfo(kvp=120, convolution_kernel="B30f")
    )
    path = save_calibration(cal, tmp_path / "cal.json")
    assert load_calibration(path) == cal
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="not a calibration JSON"):
        load_calibration(tmp_path / "bad.json")
    (tmp_path / "bad2.json").write_text(json.dumps({"method": "phantom", "slope": "x"}))
    with pytest.raises(ConfigError, match="slope"):
        load_calibration(tmp_path / "bad2.json")
    good = json.loads(path.read_text())
    for change, message in (
        ({"slope": 0.0}, "slope must be positive"),
        ({"slope": -0.8}, "slope must be positive"),
        ({"material": None}, "names no material"),
        ({"schema_version": "7.0"}, "schema version '7.0'"),
    ):
        (tmp_path / "nonsense.json").write_text(json.dumps({**good, **change}))
        with pytest.raises(ConfigError, match=message):
            load_calibration(tmp_path / "nonsense.json")


# ----------------------------------------------------------------------------- command line


def test_cli_calibrate_then_run_recovers_densities(esp_files, esp_scan, tmp_path):
    cal_path = tmp_path / "calibration.json"
    r = run("calibrate", "phantom", esp_files / "scan.nii.gz", "--phantom", "bmas200", "--out", cal_path)
    assert r.returncode == 0, r.stderr
    r = run(
        "run",
        esp_files / "scan.nii.gz",
        "--segmenter",
        "masks",
        "--masks",
        esp_files / "labels.nii.gz",
        "--calibration",
        cal_path,
        "--out",
        tmp_path / "run",
    )
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["calibration"]["method"] == "stored" and report["calibration"]["material"] == "HA"
    for v in report["vertebrae"]:
        assert v["bmd_mg_cm3"] == pytest.approx(esp_scan.trabecular_mg_cm3[v["level"]], rel=0.01)
    summary = report["summary"]
    assert summary["levels_used"] == ["L1", "L2"] and summary["acr_category"] == "osteoporosis"
    assert summary["bmd_mg_cm3_mean"] == pytest.approx(75.0, rel=0.01)


def test_cli_run_uses_internal_calibration_by_default(esp_files, esp_scan, tmp_path):
    r = run("run", esp_files / "scan.nii.gz", "--masks", esp_files / "labels.nii.gz", "--out", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["calibration"]["method"] == "internal"
    assert set(report["calibration"]["reference_tissues"]) == {"air", "fat", "muscle", "blood"}
    for v in report["vertebrae"]:
        assert v["bmd_mg_cm3"] == pytest.approx(esp_scan.trabecular_mg_cm3[v["level"]], rel=0.05)


def test_cli_calibrate_rods_and_bad_input(tmp_path):
    out = tmp_path / "cal.json"
    r = run("calibrate", "rods", "--phantom", "mindways-model3", "--hu", ",".join(map(str, GOLDEN_HU)), "--out", out)
    assert r.returncode == 0, r.stderr and "0.80028" in r.stdout
    assert load_calibration(out).slope == pytest.approx(0.80028, abs=1e-4)
    bad = {
        "one rod": (["--phantom", "siemens-osteo", "--hu", "10"], "1 rod HU values given"),
        "nan": (["--phantom", "siemens-osteo", "--hu", "10,nan"], "finite"),
        "unknown phantom": (["--phantom", "acme-9000", "--hu", "1,2"], "unknown phantom"),
        "poor fit": (["--phantom", "qrm-bdc-6rod", "--hu", "0,500,100,600,200,900"], "fit too poor"),
        "rod count": (["--phantom", "bmas200", "--hu", "1,2,3"], "3 rod HU values given"),
        "not numbers": (["--phantom", "bmas200", "--hu", "a,b"], "comma-separated numbers"),
    }
    for name, (args, fragment) in bad.items():
        target = tmp_path / f"{name.replace(' ', '_')}.json"
        r = run("calibrate", "rods", *args, "--out", target)
        assert_clean_error(r, fragment)
        assert not target.exists()


def test_cli_rods_mask_count_mismatch(esp_files, tmp_path):
    r = run(
        "calibrate",
        "phantom",
        esp_files / "scan.nii.gz",
        "--phantom",
        "qrm-bdc-3rod",
        "--rods",
        esp_files / "rods.nii.gz",
        "--out",
        tmp_path / "c.json",
    )
    assert_clean_error(r, "3 rods")


def test_stored_calibration_warns_when_scan_differs(esp_scan):
    import dataclasses

    from volbmd.config import load_config
    from volbmd.pipeline import calibrate_and_classify

    phantom = load_phantom("bmas200")
    hu = rod_hu_from_mask(esp_scan.volume, esp_scan.rods, 5)[0]
    cal = calibrate_from_hu(phantom, hu, scanner=ScannerInfo(manufacturer="volbmd", kvp=120.0, convolution_kernel="smooth"))
    result = measure_vertebrae(esp_scan.volume, esp_scan.labels)
    same = calibrate_and_classify(esp_scan.volume, esp_scan.labels, result, load_config(), cal)
    assert same.calibration.method == "stored" and not [w for w in same.warnings if "differs" in w]
    other = dataclasses.replace(
        esp_scan.volume, metadata={**esp_scan.volume.metadata, "kvp": 100.0, "convolution_kernel": "sharp"}
    )
    out = calibrate_and_classify(other, esp_scan.labels, result, load_config(), cal)
    text = " | ".join(out.warnings)
    assert "kVp: 120.0 vs 100.0" in text and "convolution kernel: smooth vs sharp" in text

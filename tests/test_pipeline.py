"""End to end: analyze(), write_outputs(), the report schema, the demo, DICOM SEG, a real CT."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from test_cli import run

import volbmd
from volbmd.io import load_volume

REPO = Path(__file__).resolve().parents[1]
ALL_OUTPUTS = {
    "report.json",
    "vertebrae.csv",
    "labels.nii.gz",
    "bodies.nii.gz",
    "rois.nii.gz",
    "qa.png",
    "report.html",
    "config.yaml",
}


def _schema():
    return json.loads((REPO / "configs" / "schema" / "report.schema.json").read_text())


def test_schemas_are_current():
    sys.path.insert(0, str(REPO / "tools"))
    from gen_schemas import schemas

    for name, schema in schemas().items():
        committed = json.loads((REPO / "configs" / "schema" / name).read_text())
        assert committed == json.loads(json.dumps(schema, sort_keys=True)), f"{name} is stale: run tools/gen_schemas.py"


def test_analyze_in_memory_and_write_outputs(esp_scan, tmp_path):
    import jsonschema

    from volbmd.demo import GivenLabels

    stages = []
    report = volbmd.analyze(
        esp_scan.volume,
        segmenter=GivenLabels(esp_scan.labels),
        progress=lambda stage, s: stages.append(stage),
        measurement={"roi": "mid_slab_ellipse"},
    )
    assert stages == ["load", "segment", "measure", "calibrate_classify"]
    assert report.measurement.roi == "mid_slab_ellipse"
    assert set(report.timings_s) == set(stages)
    before = report.model_dump()
    paths = volbmd.write_outputs(report, tmp_path)
    assert set(paths) == ALL_OUTPUTS
    assert report.model_dump() == before  # what was written is in the files, not added to the report
    assert report.artifacts is not None
    assert {p.name for p in tmp_path.iterdir() if not p.name.startswith(".")} == ALL_OUTPUTS
    pointer = json.loads((tmp_path / ".volbmd_run.json").read_text())  # for `volbmd review`, not a report
    assert pointer["scan"] is None  # an in-memory volume has no file to point to
    data = json.loads((tmp_path / "report.json").read_text())
    jsonschema.validate(data, _schema())
    assert data["timings_s"]["report"] > 0 and set(data["outputs"]) == ALL_OUTPUTS
    for name in ("labels.nii.gz", "bodies.nii.gz", "rois.nii.gz"):
        assert load_volume(tmp_path / name).geometry.matches(esp_scan.volume.geometry)
    bodies, rois = load_volume(tmp_path / "bodies.nii.gz").array, load_volume(tmp_path / "rois.nii.gz").array
    assert ((rois > 0) <= (bodies > 0)).all() and (rois > 0).any()
    png = (tmp_path / "qa.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    from volbmd.config import config_sha256, load_config

    repeated = load_config(tmp_path / "config.yaml")  # the resolved settings, valid as a --config file
    assert repeated == report.artifacts.config and repeated.measurement.roi == "mid_slab_ellipse"
    assert data["config_sha256"] == config_sha256(repeated) != config_sha256(load_config())  # names the settings
    html = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in html and "osteoporosis" in html
    assert "http://" not in html and "https://" not in html and "<script" not in html  # self-contained


def test_write_outputs_needs_analyze_report(tmp_path):
    report = volbmd.Report.model_validate(json.loads(json.dumps(_minimal_report())))
    with pytest.raises(ValueError, match="analyze"):
        volbmd.write_outputs(report, tmp_path)


def _minimal_report():
    return {
        "volbmd_version": "0",
        "input": {"path": "x", "shape": [1, 1, 1], "spacing_mm": [1, 1, 1]},
        "segmentation": {"backend": "masks", "levels_found": []},
        "vertebrae": [],
    }


def test_demo_command(tmp_path):
    r = run("demo", "--out", tmp_path / "demo")
    assert r.returncode == 0, r.stderr
    files = {p.name for p in (tmp_path / "demo").iterdir()}
    assert ALL_OUTPUTS | {"scan.nii.gz", "calibration.json"} <= files
    report = json.loads((tmp_path / "demo" / "report.json").read_text())
    truth = {"L1": 50.0, "L2": 100.0, "L3": 200.0}
    for v in report["vertebrae"]:
        assert v["bmd_mg_cm3"] == pytest.approx(truth[v["level"]], rel=0.01)
    assert report["summary"]["acr_category"] == "osteoporosis" and "true mg/cm³" in r.stdout


def test_dicom_input_gets_dicom_seg(tmp_path):
    import pydicom
    from dicom_factory import write_ct_series

    from volbmd.phantoms import make_spine_phantom
    from volbmd.volume import LabelMap

    p = make_spine_phantom(levels=("L1", "L2"), spacing_mm=(2.0, 1.0, 1.0))
    series = tmp_path / "series"
    write_ct_series(series, p.volume.array, spacing_mm=p.volume.spacing_mm, origin=p.volume.origin_lps_mm)
    scan = load_volume(series)
    volbmd.write_volume(LabelMap.on_grid_of(scan, p.labels.array, p.labels.labels), tmp_path / "labels.nii.gz")
    r = run("run", series, "--masks", tmp_path / "labels.nii.gz", "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    seg = pydicom.dcmread(tmp_path / "out" / "dicom_seg.dcm")
    assert seg.Modality == "SEG" and len(seg.SegmentSequence) == 2
    assert {s.SegmentLabel for s in seg.SegmentSequence} == {"vertebra L1", "vertebra L2"}
    assert "_dicom_files" not in (tmp_path / "out" / "report.json").read_text()


def test_abdomen_ct_end_to_end_classical(shared_data, tmp_path):
    r = run("run", shared_data / "ts_abdomen_ct" / "ct.nii.gz", "--out", tmp_path / "abd")
    assert r.returncode == 0, r.stderr
    assert ALL_OUTPUTS <= {p.name for p in (tmp_path / "abd").iterdir()}
    report = json.loads((tmp_path / "abd" / "report.json").read_text())
    assert report["segmentation"]["backend"] == "classical"
    assert {"T12", "L1", "L2", "L3", "L4", "L5"} <= set(report["segmentation"]["levels_found"])
    assert report["calibration"]["method"] == "internal"
    assert any("thick slices: 3 mm" in w for w in report["qa"]["warnings"])
    assert set(report["timings_s"]) == {"load", "segment", "measure", "calibrate_classify", "report"}


def test_overrides_merge_into_a_given_config(esp_scan):
    """A section override changes only its keys; the config's other settings in that section stay."""
    from volbmd.config import load_config
    from volbmd.demo import GivenLabels

    cfg = load_config(overrides={"measurement": {"cortical_depth_mm": 5.0}})
    report = volbmd.analyze(
        esp_scan.volume, cfg, segmenter=GivenLabels(esp_scan.labels), measurement={"roi": "mid_slab_ellipse"}
    )
    m = report.measurement.model_dump()
    assert m["roi"] == "mid_slab_ellipse" and m["cortical_depth_mm"] == 5.0


def _undeclared(model, path="report") -> list[str]:
    """Keys of a report that its pydantic models do not declare (model_extra), anywhere inside."""
    out = [f"{path}.{k}" for k in (model.model_extra or {})]
    for name in type(model).model_fields:
        value = getattr(model, name)
        items = value if isinstance(value, list) else [value]
        out += [
            k
            for i, item in enumerate(items)
            if hasattr(type(item), "model_fields")
            for k in _undeclared(item, f"{path}.{name}" + (f"[{i}]" if isinstance(value, list) else ""))
        ]
    return out


def test_every_report_key_is_declared(esp_scan, tmp_path):
    """The contract is the models: a report as written (outputs, timings, the calibration with its
    rods, measured SDs) has no key the models do not declare, and the CSV's extra columns come from
    the model."""
    from volbmd.demo import GivenLabels
    from volbmd.report.models import Report, csv_extra_columns

    report = volbmd.analyze(esp_scan.volume, segmenter=GivenLabels(esp_scan.labels), uncertainty={"repeat_draws": 1})
    volbmd.write_outputs(report, tmp_path)
    written = Report.model_validate(json.loads((tmp_path / "report.json").read_text()))
    assert _undeclared(written) == []
    assert written.outputs and written.timings_s["report"] > 0
    header = (tmp_path / "vertebrae.csv").read_text().splitlines()[0].split(",")
    assert header[-len(csv_extra_columns()) :] == csv_extra_columns()
    assert {"bmd_sd_mg_cm3", "roi", "trabecular_hu_p5", "segmentation_confidence"} <= set(csv_extra_columns())
    assert "centroid_lps_mm" not in csv_extra_columns()  # a list: no single CSV cell

"""DICOM results (SEG, SR, secondary capture) checked by real validators (dciodvfy from dicom3tools,
dsrdump from dcmtk) and sent to a real DICOM receiver (dcmtk's storescp)."""

from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_factory import write_ct_series
from test_cli import run

import volbmd
from volbmd.io import load_label_map, load_volume

OUTPUTS = ("dicom_seg.dcm", "dicom_sr.dcm", "dicom_sc.dcm")


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: install Debian's dicom3tools and dcmtk (tools/setup_env.sh does, as root)"
    return path


def _dciodvfy_errors(path: Path) -> list[str]:
    result = subprocess.run([_tool("dciodvfy"), str(path)], capture_output=True, text=True)
    lines = (result.stdout + result.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")]


@pytest.fixture(scope="module")
def dicom_run(tmp_path_factory):
    """A run on a synthetic CT series whose files carry a negative SpacingBetweenSlices (as some
    scanners write) and institution, station and operator names."""
    from volbmd.phantoms import make_spine_phantom
    from volbmd.volume import LabelMap

    tmp = tmp_path_factory.mktemp("dicom_run")
    p = make_spine_phantom(levels=("L1", "L2"), spacing_mm=(2.0, 1.0, 1.0))
    series = tmp / "series"
    write_ct_series(series, p.volume.array, spacing_mm=p.volume.spacing_mm, origin=p.volume.origin_lps_mm)
    for f in sorted(series.iterdir()):
        ds = pydicom.dcmread(f)
        ds.SpacingBetweenSlices = -2.0
        ds.InstitutionName = "Saint Elsewhere Hospital"
        ds.StationName = "CT-ROOM-7"
        ds.OperatorsName = "Tech^Tom"
        ds.save_as(f, enforce_file_format=True)
    scan = load_volume(series)
    volbmd.write_volume(LabelMap.on_grid_of(scan, p.labels.array, p.labels.labels), tmp / "labels.nii.gz")
    r = run("run", series, "--masks", tmp / "labels.nii.gz", "--out", tmp / "out")
    assert r.returncode == 0, r.stderr
    return series, tmp / "out"


def test_dicom_results_pass_dciodvfy_and_carry_no_extra_identifiers(dicom_run):
    series, out = dicom_run
    source = pydicom.dcmread(sorted(series.iterdir())[0])
    for name in OUTPUTS:
        assert _dciodvfy_errors(out / name) == [], name
        ds = pydicom.dcmread(out / name)
        assert ds.StudyInstanceUID == source.StudyInstanceUID and ds.PatientID == source.PatientID
        assert ds.SeriesInstanceUID != source.SeriesInstanceUID
        for keyword in ("InstitutionName", "StationName", "OperatorsName"):
            assert not ds.get(keyword), (name, keyword)
    report = json.loads((out / "report.json").read_text())
    assert set(OUTPUTS) <= set(report["outputs"])


def test_seg_spacing_positive_and_segments_coded_by_snomed(dicom_run):
    _, out = dicom_run
    seg = pydicom.dcmread(out / "dicom_seg.dcm")
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(measures.SpacingBetweenSlices) == pytest.approx(2.0)
    types = {
        s.SegmentLabel: (
            s.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator,
            s.SegmentedPropertyTypeCodeSequence[0].CodeValue,
        )
        for s in seg.SegmentSequence
    }
    assert types == {"vertebra L1": ("SCT", "66794005"), "vertebra L2": ("SCT", "14293000")}


def test_sr_holds_the_report_and_references_the_seg(dicom_run):
    import highdicom as hd

    _, out = dicom_run
    report = json.loads((out / "report.json").read_text())
    sr = hd.sr.srread(out / "dicom_sr.dcm")
    seg = pydicom.dcmread(out / "dicom_seg.dcm")
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert [g.tracking_identifier for g in groups] == [f"vertebra {v['level']}" for v in report["vertebrae"]]
    for g, v in zip(groups, report["vertebrae"]):
        assert g.referenced_segment.referenced_sop_instance_uid == seg.SOPInstanceUID
        values = {(m.name.meaning, m.derivation.meaning if m.derivation else None): m.value for m in g.get_measurements()}
        assert values[("Attenuation Coefficient", "Mean")] == pytest.approx(v["trabecular_hu_mean"])
        assert values[("Attenuation Coefficient", "Median")] == pytest.approx(v["trabecular_hu_median"])
        assert values[("Volumetric bone mineral density (HA equivalent)", "Mean")] == pytest.approx(v["bmd_mg_cm3"])
    text = subprocess.run([_tool("dsrdump"), str(out / "dicom_sr.dcm")], capture_output=True, text=True).stdout
    assert "Bone structure of L1" in text and "Imaging Measurement Report" in text
    assert f'"{report["summary"]["acr_category"]} (L1+L2)"' in text
    assert "99VOLBMD" in text and "(mg/cm3,UCUM" in text


def test_secondary_capture_is_the_qa_picture(dicom_run):
    from PIL import Image

    _, out = dicom_run
    sc = pydicom.dcmread(out / "dicom_sc.dcm")
    png = np.asarray(Image.open(io.BytesIO((out / "qa.png").read_bytes())).convert("RGB"))
    assert sc.Modality == "OT" or sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert np.array_equal(sc.pixel_array, png)


def test_contrast_abdomen_series_results_pass_dciodvfy(shared_data, tmp_path):
    r = run("run", shared_data / "abdomen_ct_contrast_5mm" / "dicom", "--out", tmp_path / "abd")
    assert r.returncode == 0, r.stderr
    for name in OUTPUTS:
        assert _dciodvfy_errors(tmp_path / "abd" / name) == [], name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_storescp(port: int, folder: Path, *extra: str) -> subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [_tool("storescp"), "-od", str(folder), "--aetitle", "PACS", *extra, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("storescp did not start")


def test_send_to_storescp_round_trip(dicom_run, tmp_path):
    import highdicom as hd

    _, out = dicom_run
    run_dir = tmp_path / "run"
    shutil.copytree(out, run_dir)
    port = _free_port()
    received = tmp_path / "received"
    proc = _start_storescp(port, received)
    try:
        r = run("send", run_dir, "--to", f"127.0.0.1:{port}", "--aet", "VOLBMD", "--called-aet", "PACS")
    finally:
        proc.kill()
        proc.wait()
    assert r.returncode == 0, r.stderr
    got = {pydicom.dcmread(f).SOPInstanceUID: f for f in received.iterdir()}
    sent = json.loads((run_dir / "sent.json").read_text())
    assert [e["file"] for e in sent] == list(OUTPUTS)
    for name in OUTPUTS:
        original = pydicom.dcmread(run_dir / name)
        assert original.SOPInstanceUID in got
        back = pydicom.dcmread(got[original.SOPInstanceUID])
        assert back.SOPClassUID == original.SOPClassUID
        assert back.get("PixelData") == original.get("PixelData")
        assert back.get("ContentSequence") == original.get("ContentSequence")
        assert {e["sop_instance_uid"] for e in sent if e["file"] == name} == {original.SOPInstanceUID}
    seg_back = hd.seg.segread(got[pydicom.dcmread(run_dir / "dicom_seg.dcm").SOPInstanceUID])
    seg_orig = hd.seg.segread(run_dir / "dicom_seg.dcm")
    assert np.array_equal(seg_back.pixel_array, seg_orig.pixel_array)
    sr_back = hd.sr.srread(got[pydicom.dcmread(run_dir / "dicom_sr.dcm").SOPInstanceUID])
    assert len(sr_back.content.get_volumetric_roi_measurement_groups()) == 2


def test_send_refused_or_unreachable_is_one_line_and_nothing_is_marked_sent(dicom_run, tmp_path):
    _, out = dicom_run
    run_dir = tmp_path / "run"
    shutil.copytree(out, run_dir)
    port = _free_port()
    r = run("send", run_dir, "--to", f"127.0.0.1:{port}")  # nothing listens
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "cannot reach the DICOM node" in r.stderr and "nothing was sent" in r.stderr
    proc = _start_storescp(port, tmp_path / "received", "--refuse")
    try:
        r = run("send", run_dir, "--to", f"127.0.0.1:{port}")
    finally:
        proc.kill()
        proc.wait()
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "rejected the association" in r.stderr
    assert not (run_dir / "sent.json").exists()
    for args, message in (
        (["--to", "pacs"], "--to must be HOST:PORT"),
        (["--to", "h:1", "--aet", "A" * 17], "--aet must be 1–16"),
    ):
        r = run("send", run_dir, *args)
        assert r.returncode == 2 and message in r.stderr
    r = run("send", tmp_path, "--to", "h:1")
    assert r.returncode == 2 and "no DICOM results to send" in r.stderr


STUDY_UID = "1.2.826.0.1.3680043.8.498.4711"


@pytest.fixture(scope="module")
def nifti_run(tmp_path_factory):
    """A run on a NIfTI scan (an oblique grid, so that the derived series' geometry is tested) with
    study identifiers given on the command line."""
    from volbmd.phantoms import make_spine_phantom
    from volbmd.volume import LabelMap, Volume

    tmp = tmp_path_factory.mktemp("nifti_run")
    p = make_spine_phantom(levels=("L1", "L2"), spacing_mm=(2.0, 1.0, 1.0))
    a = np.deg2rad(10.0)
    direction = ((np.cos(a), 0.0, np.sin(a)), (0.0, 1.0, 0.0), (-np.sin(a), 0.0, np.cos(a)))
    scan = Volume(p.volume.array, p.volume.spacing_mm, (-40.0, 12.5, 300.0), direction)
    volbmd.write_volume(scan, tmp / "scan.nii.gz")
    volbmd.write_volume(LabelMap.on_grid_of(scan, p.labels.array, p.labels.labels), tmp / "labels.nii.gz")
    r = run(
        "run", tmp / "scan.nii.gz", "--masks", tmp / "labels.nii.gz", "--out", tmp / "out",
        "--study-uid", STUDY_UID, "--patient-id", "PID-7", "--patient-name", "Roe^Richard",
        "--accession-number", "ACC-9", "--study-date", "20250317", "--kvp", "120",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return scan, tmp / "out"


def test_nifti_scan_with_study_identifiers_gets_valid_dicom_results_in_that_study(nifti_run):
    import highdicom as hd

    scan, out = nifti_run
    ct_files = sorted((out / "dicom_ct").iterdir())
    assert len(ct_files) == scan.shape[0]
    for name in OUTPUTS:
        assert _dciodvfy_errors(out / name) == [], name
    for f in (ct_files[0], ct_files[-1]):
        assert _dciodvfy_errors(f) == [], f.name
    # the derived series holds the scan, voxel for voxel, where the scan lies
    reread = load_volume(out / "dicom_ct")
    assert np.array_equal(reread.array, np.rint(scan.array))
    assert reread.geometry.matches(scan.geometry)
    assert reread.metadata["kvp"] == 120
    for name in (*OUTPUTS, "dicom_ct/" + ct_files[0].name):
        ds = pydicom.dcmread(out / name)
        assert ds.StudyInstanceUID == STUDY_UID
        assert (ds.PatientID, str(ds.PatientName), ds.AccessionNumber, ds.StudyDate) == (
            "PID-7",
            "Roe^Richard",
            "ACC-9",
            "20250317",
        )
    # the SEG references the derived images and holds the masks on them
    ct_uids = {pydicom.dcmread(f).SOPInstanceUID for f in ct_files}
    seg = hd.seg.segread(out / "dicom_seg.dcm")
    assert {uid for _, _, uid in seg.get_source_image_uids()} <= ct_uids
    labels = load_label_map(out / "labels.nii.gz", {"L1": 20, "L2": 21})
    seg_volume = seg.get_volume(combine_segments=True, relabel=True)
    assert int(np.count_nonzero(seg_volume.array)) == int(np.count_nonzero(labels.array))
    # identifiers go into the DICOM objects only, never into the reports
    for name in ("report.json", "vertebrae.csv", "config.yaml"):
        text = (out / name).read_text()
        assert "Roe" not in text and "PID-7" not in text and STUDY_UID not in text, name
    assert "dicom_ct" in json.loads((out / "report.json").read_text())["outputs"]


def test_nifti_dicom_results_sent_with_their_images(nifti_run, tmp_path):
    _, out = nifti_run
    run_dir = tmp_path / "run"
    shutil.copytree(out, run_dir)
    port = _free_port()
    received = tmp_path / "received"
    proc = _start_storescp(port, received)
    try:
        r = run("send", run_dir, "--to", f"127.0.0.1:{port}", "--called-aet", "PACS")
    finally:
        proc.kill()
        proc.wait()
    assert r.returncode == 0, r.stderr
    sent = [e["file"] for e in json.loads((run_dir / "sent.json").read_text())]
    ct_names = sorted("dicom_ct/" + f.name for f in (run_dir / "dicom_ct").iterdir())
    assert sent == ct_names + list(OUTPUTS)  # images first: the node holds what the SEG references
    assert len(list(received.iterdir())) == len(sent)


def test_study_identifiers_checked_before_the_run(nifti_run, dicom_run, tmp_path):
    series, _ = dicom_run
    for args, message in (
        (["--study-uid", "1.2.abc"], "not a DICOM UID"),
        (["--study-uid", STUDY_UID, "--study-date", "2025-03-17"], "YYYYMMDD"),
        (["--patient-id", "PID-7"], "--patient-id need --study-uid"),
    ):
        r = run("run", tmp_path / "missing.nii.gz", "--out", tmp_path / "o", *args)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
    r = run("run", series, "--out", tmp_path / "o", "--study-uid", STUDY_UID)
    assert r.returncode == 2 and "a DICOM series names its own study" in r.stderr
    assert not (tmp_path / "o").exists()

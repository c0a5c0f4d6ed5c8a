"""The command line as a user runs it: exit codes, one-line errors, no partial output, no PHI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from dicom_factory import write_ct_series

VOLBMD = [sys.executable, "-m", "volbmd.cli"]


def run(*args, cwd=None):
    env = dict(os.environ, COLUMNS="120")
    return subprocess.run([*VOLBMD, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def assert_clean_error(result, *fragments):
    assert result.returncode == 2, result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("volbmd: error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def dicom_folder(tmp_path):
    hu = np.random.default_rng(3).integers(-1000, 1500, size=(6, 12, 10)).astype(np.int16)
    write_ct_series(tmp_path / "series", hu)
    return tmp_path / "series"


def test_info_json_hides_phi_unless_asked(dicom_folder):
    result = run("info", dicom_folder, "--json")
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["size_xyz"] == [10, 12, 6]
    assert facts["spacing_mm_zyx"] == [2.0, 0.7, 0.6]
    assert facts["metadata"]["kvp"] == 120.0
    assert "Doe" not in result.stdout and "PID-12345" not in result.stdout and "19500101" not in result.stdout
    shown = run("info", dicom_folder, "--json", "--show-phi")
    assert json.loads(shown.stdout)["phi"]["patient_id"] == "PID-12345"


def test_info_table(dicom_folder):
    result = run("info", dicom_folder)
    assert result.returncode == 0
    assert "10×12×6" in result.stdout and "0.6×0.7×2.0 mm" in result.stdout and "Doe" not in result.stdout
    assert "z/y/x" not in result.stdout  # one axis order


def test_convert_round_trip(dicom_folder, tmp_path):
    out = tmp_path / "out" / "scan.nrrd"
    result = run("convert", dicom_folder, out)
    assert result.returncode == 0, result.stderr
    from volbmd.io import load_volume

    assert np.array_equal(load_volume(out).array, load_volume(dicom_folder).array)


def _bad_inputs(tmp_path: Path, dicom_folder: Path) -> dict[str, tuple[Path, list[str]]]:
    cases = {}
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "empty_dir" / "readme.txt").write_text("no dicom here")
    cases["no dicom"] = (tmp_path / "empty_dir", ["no DICOM image files", "empty_dir"])

    trunc = tmp_path / "trunc"
    shutil.copytree(dicom_folder, trunc)
    victim = sorted(trunc.iterdir())[3]
    victim.write_bytes(victim.read_bytes()[:-100])
    cases["truncated dicom"] = (trunc, ["truncated", victim.name])

    mixed = tmp_path / "mixed"
    write_ct_series(mixed / "ax", np.zeros((4, 6, 6), np.int16))
    write_ct_series(mixed / "sag", np.zeros((4, 6, 6), np.int16), orientation=(0, 1, 0, 0, 0, -1))
    cases["two orientations"] = (mixed, ["different orientations", "--series"])

    def mha(name, header, data):
        p = tmp_path / name
        p.write_bytes(header.encode() + data)
        return p

    hdr = (
        "ObjectType = Image\nNDims = {n}\nDimSize = {d}\nElementSpacing = {s}\nElementType = {t}\nElementDataFile = LOCAL\n"
    )
    cases["2d"] = (mha("flat.mha", hdr.format(n=2, d="5 5", s="1 1", t="MET_SHORT"), bytes(50)), ["2D", "flat.mha"])
    cases["4d"] = (mha("t.mha", hdr.format(n=4, d="3 3 3 2", s="1 1 1 1", t="MET_SHORT"), bytes(108)), ["4D", "t.mha"])
    nan = np.zeros(27, np.float32)
    nan[4] = np.nan
    cases["nan"] = (mha("nan.mha", hdr.format(n=3, d="3 3 3", s="1 1 1", t="MET_FLOAT"), nan.tobytes()), ["NaN", "nan.mha"])
    inf = np.zeros(27, np.float32)
    inf[4] = np.inf
    cases["inf"] = (mha("inf.mha", hdr.format(n=3, d="3 3 3", s="1 1 1", t="MET_FLOAT"), inf.tobytes()), ["infinite"])
    cases["zero spacing"] = (mha("z.mha", hdr.format(n=3, d="3 3 3", s="1 0 1", t="MET_SHORT"), bytes(54)), ["spacing"])
    cases["negative spacing"] = (mha("n.mha", hdr.format(n=3, d="3 3 3", s="1 1 -2", t="MET_SHORT"), bytes(54)), ["spacing"])
    cases["absurd spacing"] = (
        mha("a.mha", hdr.format(n=3, d="3 3 3", s="1 1 900", t="MET_SHORT"), bytes(54)),
        ["absurd spacing"],
    )
    garbage = tmp_path / "garbage.nii"
    garbage.write_bytes(os.urandom(600))
    cases["unreadable"] = (garbage, ["cannot read as nifti", "garbage.nii"])
    notgz = tmp_path / "plain.nii.gz"
    notgz.write_bytes(b"\x5c\x01\x00\x00" + bytes(400))
    cases["nii.gz not gzip"] = (notgz, ["not gzip", "plain.nii.gz"])
    cases["missing"] = (tmp_path / "does_not_exist.nii.gz", ["not found"])
    cases.update(_damaged_but_readable(tmp_path, dicom_folder))
    return cases


def _damaged_but_readable(tmp_path: Path, dicom_folder: Path) -> dict[str, tuple[Path, list[str]]]:
    """Files ITK reads without complaint (and volbmd once measured): refused with the cause named."""
    import gzip
    import struct

    import SimpleITK as sitk

    cases = {}
    arr = np.zeros((6, 7, 8), np.float32)
    arr[1, 2, 3] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(tmp_path / "nan.nii.gz"))
    cases["nan nifti"] = (tmp_path / "nan.nii.gz", ["NaN or infinite", "nan.nii.gz"])
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((6, 7, 8), np.int16)), str(tmp_path / "ok.nii"))
    header = bytearray((tmp_path / "ok.nii").read_bytes())
    zero = bytearray(header)
    struct.pack_into("<f", zero, 88, 0.0)  # pixdim[3]
    (tmp_path / "zero_pixdim.nii").write_bytes(bytes(zero))
    cases["zero pixdim"] = (tmp_path / "zero_pixdim.nii", ["zero or invalid voxel size", "zero_pixdim.nii"])
    (tmp_path / "short.nii").write_bytes(bytes(header[:-50]))
    cases["voxel data cut short"] = (tmp_path / "short.nii", ["truncated file", "short.nii"])
    huge = bytearray(header)
    struct.pack_into("<8h", huge, 40, 3, 30000, 30000, 30000, 1, 1, 1, 1)
    (tmp_path / "huge.nii.gz").write_bytes(gzip.compress(bytes(huge)))
    cases["huge declared size"] = (tmp_path / "huge.nii.gz", ["header declares", "huge.nii.gz"])
    (tmp_path / "scan.mhd").write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementType = MET_SHORT\n"
        "ElementSpacing = 1 1 1\nElementDataFile = scan.raw\n"
    )
    cases["mhd data file missing"] = (tmp_path / "scan.mhd", ["'scan.raw', which is missing"])
    uid_named = tmp_path / "1.2.826.0.1.3680043.8.498.12345"
    shutil.copy(sorted(dicom_folder.iterdir())[0], uid_named)
    cases["dicom file named by uid"] = (uid_named, ["single DICOM file", "pass the folder"])
    return cases


def test_bad_inputs_fail_cleanly_and_leave_no_output(tmp_path, dicom_folder):
    out_dir = tmp_path / "outputs"
    out_dir.mkdir()
    for name, (path, fragments) in _bad_inputs(tmp_path, dicom_folder).items():
        result = run("info", path)
        assert_clean_error(result, *fragments)
        result = run("convert", path, out_dir / f"{name.replace(' ', '_')}.nii.gz")
        assert_clean_error(result, *fragments)
    assert list(out_dir.iterdir()) == [], "a failed conversion left files behind"


def test_help_for_every_command():
    for cmd in (
        [],
        ["info"],
        ["convert"],
        ["demo"],
        ["run"],
        ["segment"],
        ["calibrate"],
        ["calibrate", "phantom"],
        ["calibrate", "rods"],
        ["review"],
    ):
        result = run(*cmd, "--help")
        assert result.returncode == 0 and "Usage" in result.stdout


def test_demo_writes_scan_and_labels(tmp_path):
    result = run("demo", "--out", tmp_path / "demo")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "demo" / "scan.nii.gz").exists() and (tmp_path / "demo" / "labels.nii.gz").exists()
    assert "L1" in result.stdout and (tmp_path / "demo" / "report.json").exists()


def test_usage_mistakes_are_one_line_and_exit_2():
    for args, fragment in (
        (["run"], "Missing argument"),
        (["frob"], "No such command 'frob'"),
        (["run", "x.nii.gz", "--out", "o", "--roi"], "requires an argument"),
        (["info", "--bogus"], "No such option"),
    ):
        result = run(*args)
        assert_clean_error(result, fragment, "--help")
        assert "╭" not in result.stderr  # no boxes
    version = run("--version")
    assert version.returncode == 0 and version.stdout.startswith("volbmd ")


def test_review_without_a_display_says_how(tmp_path):
    assert run("demo", "--out", tmp_path / "d").returncode == 0
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    result = subprocess.run([*VOLBMD, "review", str(tmp_path / "d")], capture_output=True, text=True, env=env, timeout=300)
    assert_clean_error(result, "no display", "xvfb-run")

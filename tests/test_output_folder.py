"""Output folders: checked before the analysis, swapped in whole, never mixing two scans."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from test_cli import assert_clean_error, run

import volbmd
from volbmd.errors import InputError
from volbmd.io.output_folder import RUN_MARKER, check_output_file, check_output_folder, fresh_output_folder


@pytest.fixture(scope="module")
def analysed(esp_scan):
    from volbmd.demo import GivenLabels

    return volbmd.analyze(esp_scan.volume, segmenter=GivenLabels(esp_scan.labels))


def test_output_path_problems_are_refused(tmp_path):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(InputError, match="exists and is a file"):
        check_output_folder(tmp_path / "a_file")
    with pytest.raises(InputError, match="is a file, not a folder"):
        check_output_folder(tmp_path / "a_file" / "sub" / "out")  # a parent that cannot be made
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.docx").write_text("precious")
    with pytest.raises(InputError, match="not a volbmd result"):
        check_output_folder(tmp_path / "mine")
    with pytest.raises(InputError, match="is a folder"):
        check_output_file(tmp_path / "mine")
    (tmp_path / "empty").mkdir()
    assert check_output_folder(tmp_path / "empty") == (tmp_path / "empty").absolute()
    assert check_output_folder(tmp_path / "new" / "deeper") == (tmp_path / "new" / "deeper").absolute()


def test_rerun_replaces_an_earlier_result_whole(analysed, tmp_path):
    out = tmp_path / "result"
    volbmd.write_outputs(analysed, out)
    (out / "dicom_seg.dcm").write_bytes(b"the previous patient's SEG")  # what an earlier DICOM run left
    volbmd.write_outputs(analysed, out)
    assert not (out / "dicom_seg.dcm").exists()
    assert (out / "report.json").is_file() and (out / RUN_MARKER).is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["result"]  # no temporary or backup folder left


def test_failed_write_leaves_the_earlier_result_untouched(analysed, tmp_path, monkeypatch):
    out = tmp_path / "result"
    volbmd.write_outputs(analysed, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    from volbmd.report import html

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(html, "render_html", broken)
    with pytest.raises(OSError, match="disk full"):
        volbmd.write_outputs(analysed, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["result"]


def test_a_run_killed_midway_leaves_the_folder_as_it_was(tmp_path):
    """SIGKILL (no cleanup runs) after every output is written but before the swap."""
    out = tmp_path / "result"
    assert run("demo", "--out", out).returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    script = (
        "import os, signal, sys\n"
        "from volbmd.demo import run_demo\n"
        "import volbmd.pipeline as p\n"
        "original = p.write_outputs\n"
        "def killed(report, out_dir, **kw):\n"
        "    def also(folder):\n"
        "        kw['also'](folder)\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return original(report, out_dir, also=also)\n"
        "p.write_outputs = killed\n"
        "run_demo(sys.argv[1])\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, timeout=300)
    assert result.returncode == -signal.SIGKILL
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "result"]
    assert all(name.startswith(".result.tmp-") for name in leftovers)  # hidden, never taken for a result


def test_run_pointer_holds_no_absolute_path(tmp_path):
    out = tmp_path / "Doe_John" / "result"
    assert run("demo", "--out", out).returncode == 0
    pointer = json.loads((out / RUN_MARKER).read_text())
    assert pointer["scan"] is None or not os.path.isabs(pointer["scan"])
    assert "Doe_John" not in (out / RUN_MARKER).read_text()


def test_cli_refuses_output_problems_before_the_analysis(tmp_path):
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    for out, fragment in (
        (tmp_path / "a_file", "exists and is a file"),
        (tmp_path / "mine", "not a volbmd result"),
        (tmp_path / "a_file" / "out", "is a file, not a folder"),
    ):
        result = run("run", tmp_path / "no_scan_needed.nii.gz", "--out", out)  # the scan is not even read
        assert_clean_error(result, fragment)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert_clean_error(run("convert", tmp_path / "x.nii.gz", tmp_path / "mine"), "is a folder")


def test_fresh_output_folder_on_interrupt(tmp_path):
    out = tmp_path / "o"
    with pytest.raises(KeyboardInterrupt), fresh_output_folder(out) as folder:
        (folder / "half.txt").write_text("half")
        raise KeyboardInterrupt
    assert not out.exists() and list(tmp_path.iterdir()) == []

"""volbmd batch: cohorts on real Dask clusters (local and reached by address), killed and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import volbmd
from volbmd.batch import PLUGIN_NAME, read_cases, run_cohort
from volbmd.errors import InputError
from volbmd.phantoms import make_spine_phantom

VOLBMD = [sys.executable, "-m", "volbmd.cli"]


def _write_cohort(root: Path, n_good: int, *, masks: bool = True) -> Path:
    """``n_good`` small spine phantoms (with masks) and one truncated scan; returns the manifest."""
    root.mkdir(parents=True, exist_ok=True)
    rows = ["id,path,masks" if masks else "id,path"]
    for i in range(n_good):
        p = make_spine_phantom(
            ("L1", "L2"), trabecular_hu={"L1": 70.0 + 15 * i, "L2": 90.0 + 15 * i}, field_of_view_mm=(120.0, 110.0), seed=i
        )
        volbmd.write_volume(p.volume, root / f"ct{i}.nii.gz")
        volbmd.write_volume(p.labels, root / f"m{i}.nii.gz")
        rows.append(f"case{i},ct{i}.nii.gz,m{i}.nii.gz" if masks else f"case{i},ct{i}.nii.gz")
    (root / "broken.nii.gz").write_bytes((root / "ct0.nii.gz").read_bytes()[:4000])
    rows.append("broken,broken.nii.gz,m0.nii.gz" if masks else "broken,broken.nii.gz")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root / "manifest.csv"


@pytest.fixture(scope="module")
def local_client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None)
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


def _statuses(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (out / "status").glob("*.json")}


def test_killed_batch_resumes_and_runs_every_case_once(tmp_path):
    """SIGKILL `volbmd batch` (client, nannies and workers) mid-run, run it again: every good case
    done exactly once, the corrupt one reported, results identical to single runs."""
    manifest = _write_cohort(tmp_path / "in", 6)
    out = tmp_path / "out"
    cmd = VOLBMD + ["batch", str(manifest), "--out", str(out), "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            done = [s for s in _statuses(out).values() if s["status"] == "done"] if (out / "status").is_dir() else []
            if len(done) >= 2 or proc.poll() is not None:
                break
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # like a power cut: nothing gets to clean up
        proc.wait()
    before = _statuses(out)
    done_before = {k for k, s in before.items() if s["status"] == "done"}
    assert 2 <= len(done_before) < 6, "the kill should land mid-run"
    assert not (out / "cohort.csv").exists()

    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert f"{len(before)} skipped" in result.stderr  # the cases finished before the kill
    table = pd.read_csv(out / "cohort.csv")
    assert table["id"].tolist() == [f"case{i}" for i in range(6)] + ["broken"]  # each once, manifest order
    assert table.set_index("id")["status"].to_dict() == {**{f"case{i}": "done" for i in range(6)}, "broken": "failed"}
    assert "broken.nii.gz" in table.set_index("id").loc["broken", "error"]
    assert "failed: broken:" in result.stderr
    assert pd.read_parquet(out / "cohort.parquet")["id"].tolist() == table["id"].tolist()
    after = _statuses(out)
    for case_id in done_before:  # finished before the kill: skipped, not run again
        assert after[case_id] == before[case_id]
    leftovers = [p.name for sub in ("cases", "status") for p in (out / sub).iterdir() if p.name.startswith(".")]
    assert leftovers == []
    assert sorted(p.name for p in (out / "cases").iterdir()) == [f"case{i}" for i in range(6)]
    # identical to single runs
    for i in (0, 5):
        single = volbmd.analyze(tmp_path / "in" / f"ct{i}.nii.gz", masks=tmp_path / "in" / f"m{i}.nii.gz")
        batch = json.loads((out / "cases" / f"case{i}" / "report.json").read_text())
        assert [v["bmd_mg_cm3"] for v in batch["vertebrae"]] == [v.bmd_mg_cm3 for v in single.vertebrae]
        assert [v["trabecular_hu_mean"] for v in batch["vertebrae"]] == [v.trabecular_hu_mean for v in single.vertebrae]
        row = table.set_index("id").loc[f"case{i}"]
        assert row["bmd_L1_mg_cm3"] == pytest.approx(single.vertebrae[0].bmd_mg_cm3, abs=1e-9)


def test_batch_on_a_scheduler_reached_by_address(tmp_path):
    """`dask scheduler` and `dask worker` started as separate processes; volbmd batch connects."""
    manifest = _write_cohort(tmp_path / "in", 2)
    scheduler_file = tmp_path / "scheduler.json"
    dask_cli = str(Path(sys.executable).with_name("dask"))
    procs = [
        subprocess.Popen(
            [dask_cli, "scheduler", "--scheduler-file", str(scheduler_file), "--port", "0", "--no-dashboard"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    ]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        procs.append(
            subprocess.Popen(
                [dask_cli, "worker", address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        result = subprocess.run(
            VOLBMD + ["batch", str(manifest), "--out", str(tmp_path / "out"), "--scheduler", address],
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tmp_path / "out" / "cohort.csv").set_index("id")
    assert table["status"].to_dict() == {"case0": "done", "case1": "done", "broken": "failed"}
    assert table.loc["case1", "bmd_L2_mg_cm3"] > table.loc["case0", "bmd_L2_mg_cm3"]


def test_unreachable_scheduler_is_one_line(tmp_path):
    manifest = _write_cohort(tmp_path / "in", 1)
    result = subprocess.run(
        VOLBMD + ["batch", str(manifest), "--out", str(tmp_path / "out"), "--scheduler", "tcp://127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("volbmd: error: tcp://127.0.0.1:9: cannot reach the Dask scheduler")
    assert "Traceback" not in result.stderr


def test_resume_keys_config_changes_retries_and_labels_zarr(tmp_path, local_client):
    manifest = _write_cohort(tmp_path / "in", 2)
    out = tmp_path / "out"
    first = run_cohort(manifest, out, client=local_client, labels_zarr=True)
    assert first.set_index("id")["status"].to_dict() == {"case0": "done", "case1": "done", "broken": "failed"}
    statuses = _statuses(out)
    # every label map in one zarr store, one group per case, equal to the case's labels.nii.gz
    from volbmd.io import load_volume

    for case_id in ("case0", "case1"):
        z = load_volume(out / "labels.zarr" / case_id)
        assert np.array_equal(z.array, load_volume(out / "cases" / case_id / "labels.nii.gz").array)
    assert not (out / "labels.zarr" / "broken").exists()

    again = run_cohort(manifest, out, client=local_client, labels_zarr=True)  # nothing to do
    assert _statuses(out) == statuses and again.equals(first)

    retried = run_cohort(manifest, out, client=local_client, retry_failed=True)
    after_retry = _statuses(out)
    assert after_retry["case0"] == statuses["case0"] and after_retry["broken"]["status"] == "failed"
    assert retried.set_index("id").loc["broken", "error"] == first.set_index("id").loc["broken", "error"]

    config = tmp_path / "ellipse.yaml"
    config.write_text("measurement:\n  roi: mid_slab_ellipse\n")
    changed = run_cohort(manifest, out, client=local_client, config=config)  # a changed config reruns
    after_change = _statuses(out)
    assert after_change["case0"]["key"] != statuses["case0"]["key"]
    assert after_change["case0"]["config_hash"] != statuses["case0"]["config_hash"]
    report = json.loads((out / "cases" / "case0" / "report.json").read_text())
    assert report["measurement"]["roi"] == "mid_slab_ellipse"
    assert len(changed) == 3 and changed["id"].is_unique

    (tmp_path / "in" / "ct1.nii.gz").write_bytes((tmp_path / "in" / "ct0.nii.gz").read_bytes())  # a new scan
    run_cohort(manifest, out, client=local_client, config=config)
    final = _statuses(out)
    assert final["case1"]["input_hash"] != after_change["case1"]["input_hash"]  # the new scan ran
    assert final["case1"]["key"] != after_change["case1"]["key"]
    assert final["case0"] == after_change["case0"]


def test_predictor_is_built_once_per_worker(tmp_path, local_client):
    """Cases without masks share the worker's segmenter (built once, kept across cases)."""
    manifest = _write_cohort(tmp_path / "in", 2, masks=False)
    table = run_cohort(manifest, tmp_path / "out", client=local_client, segmenter="classical")
    assert table.set_index("id")["status"].to_dict()["broken"] == "failed"
    builds = local_client.run(lambda dask_worker: dask_worker.plugins[PLUGIN_NAME].builds)
    assert sum(builds.values()) == 1


def test_a_case_that_kills_its_worker_is_retried_once_then_failed(tmp_path):
    """A scan too big for a worker's memory: the nanny kills the worker, the case runs once more on
    another worker, dies again and is marked failed; the other cases finish."""
    from volbmd.volume import Volume

    manifest = _write_cohort(tmp_path / "in", 2)
    rng = np.random.default_rng(0)
    huge = Volume(array=rng.integers(-1000, 1000, size=(1200, 512, 512), dtype=np.int16), spacing_mm=(0.5, 0.7, 0.7))
    volbmd.write_volume(huge, tmp_path / "in" / "huge.nii")
    del huge
    manifest.write_text(manifest.read_text() + "huge,huge.nii,\n")
    table = run_cohort(manifest, tmp_path / "out", workers=2, memory_limit="1.2GB").set_index("id")
    assert table["status"].to_dict() == {"case0": "done", "case1": "done", "broken": "failed", "huge": "failed"}
    assert table.loc["huge", "error"] == "the worker running this case died twice (killed or out of memory)"
    assert not (tmp_path / "out" / "cases" / "huge").exists()


def test_manifest_and_folder_sources(tmp_path):
    from dicom_factory import write_ct_series

    bad = tmp_path / "bad.csv"
    for text, message in (
        ("id,scan\na,x.nii.gz\n", "lacks the column(s) path"),
        ("id,path,notes\na,x.nii.gz,\n", "unknown column(s) notes"),
        ("id,path\na,x.nii.gz\na,y.nii.gz\n", "case id 'a' appears twice"),
        ("id,path\n../a,x.nii.gz\n", "line 2: case id '../a'"),
        ("id,path\na,\n", "line 2: case 'a' has no path"),
        ("id,path\n", "no cases found"),
    ):
        bad.write_text(text)
        with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
            read_cases(bad)
        result = subprocess.run(VOLBMD + ["batch", str(bad), "--out", str(tmp_path / "o")], capture_output=True, text=True)
        assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr
    assert not (tmp_path / "o").exists()

    root = tmp_path / "tree"
    p = make_spine_phantom(("L1",), seed=0)
    volbmd.write_volume(p.volume, root / "site A" / "ct.nii.gz")
    volbmd.write_volume(p.volume, root / "b.mha")
    hu = np.full((3, 8, 8), 40.0)
    write_ct_series(root / "dicom", hu, series_uid="1.2.3.1")
    write_ct_series(root / "dicom", hu, series_uid="1.2.3.2", names=[f"s2_{k}.dcm" for k in range(3)])
    cases = read_cases(root)
    assert [(c.id, c.series_uid) for c in cases] == [
        ("b", None),
        ("dicom__1.2.3.1", "1.2.3.1"),
        ("dicom__1.2.3.2", "1.2.3.2"),
        ("site_A_ct", None),
    ]
    with pytest.raises(InputError, match="lies inside the input folder"):
        run_cohort(root, root / "results")
    with pytest.raises(InputError, match="holds the input of case 'case0'"):
        run_cohort(_write_cohort(tmp_path / "flat", 1), tmp_path)


def test_manifest_study_columns_put_dicom_results_into_that_study(tmp_path, local_client):
    import pydicom
    from dicom_factory import write_ct_series

    root = tmp_path / "in"
    p = make_spine_phantom(("L1", "L2"), field_of_view_mm=(120.0, 110.0), seed=3)
    volbmd.write_volume(p.volume, root / "ct.nii.gz")
    volbmd.write_volume(p.labels, root / "m.nii.gz")
    write_ct_series(root / "dicom", np.full((3, 8, 8), 40.0))
    study = "1.2.826.0.1.3680043.8.498.99"
    (root / "manifest.csv").write_text(
        "id,path,masks,study_uid,patient_id,accession_number\n"
        f"nifti,ct.nii.gz,m.nii.gz,{study},PID-1,ACC-1\n"
        "plain,ct.nii.gz,m.nii.gz,,,\n"
        f"dicom,dicom,,{study},,\n"
    )
    table = run_cohort(root / "manifest.csv", tmp_path / "out", client=local_client).set_index("id")
    assert table["status"].to_dict() == {"nifti": "done", "plain": "done", "dicom": "failed"}
    assert "a DICOM series names its own study" in table.loc["dicom", "error"]
    cases = tmp_path / "out" / "cases"
    seg = pydicom.dcmread(cases / "nifti" / "dicom_seg.dcm")
    assert (seg.StudyInstanceUID, seg.PatientID, seg.AccessionNumber) == (study, "PID-1", "ACC-1")
    assert len(list((cases / "nifti" / "dicom_ct").iterdir())) == p.volume.shape[0]
    assert not (cases / "plain" / "dicom_seg.dcm").exists() and not (cases / "plain" / "dicom_ct").exists()
    bad = tmp_path / "bad.csv"
    for text, message in (
        ("id,path,study_uid\na,x.nii.gz,1.2.x\n", "line 2: study_uid: not a DICOM UID"),
        ("id,path,patient_id\na,x.nii.gz,P\n", "line 2: patient_id need a study_uid"),
    ):
        bad.write_text(text)
        with pytest.raises(InputError, match=message):
            read_cases(bad)

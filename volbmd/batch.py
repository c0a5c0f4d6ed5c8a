"""Cohorts on Dask: many scans, one result folder per case, one cohort table; resumable and
fault-isolated.

Layout of ``OUT``::

    OUT/cases/<id>/        the outputs of `volbmd run` for one case (swapped in whole)
    OUT/status/<id>.json   the case's row: done or failed, with its key (written after its folder)
    OUT/labels.zarr/<id>   its label map, when asked for (one OME-Zarr group per case)
    OUT/cohort.csv, OUT/cohort.parquet   every case of the manifest, one row each

A case is finished when its status file exists; every file is written under a temporary name and
renamed, so a kill at any moment leaves either a finished case or one that runs again. The status
file is keyed by a hash of the input files, the resolved configuration and the volbmd version: the
same command again skips finished cases, a changed configuration reruns them, ``retry_failed``
retries failed ones. Rows come from the status files, one per case id, so none is ever duplicated.

Each case runs as one Dask task (one case in flight per worker thread). A worker builds its
segmenter (an nnU-Net or MONAI predictor) once and keeps it for later cases
(:class:`SegmenterCache`). A bad scan gives a failed row with its error and the others go on; a
worker that dies (killed, out of memory) has its case retried once on another worker, then the case
is marked failed (``distributed.scheduler.allowed-failures`` = 1 on the LocalCluster volbmd starts;
an external scheduler keeps its own setting).

On a cluster of several machines, the scans and ``OUT`` must be on a file system every worker sees,
at the same paths, and volbmd installed on every worker.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from distributed import WorkerPlugin

from volbmd.errors import ConfigError, InputError, VolbmdError
from volbmd.io import is_dicom_series_path
from volbmd.report.dicom_study import DicomStudy

__all__ = ["Case", "read_cases", "run_cohort", "cohort_table", "SegmenterCache", "case_key"]

CASES_DIR = "cases"
STATUS_DIR = "status"
LABELS_ZARR = "labels.zarr"
PLUGIN_NAME = "volbmd-segmenters"
#: For scans that are not DICOM: the study their DICOM results go into (see volbmd.report.dicom_study).
STUDY_COLUMNS = {
    "study_uid": "study_instance_uid",
    "patient_id": "patient_id",
    "patient_name": "patient_name",
    "accession_number": "accession_number",
    "study_date": "study_date",
}
MANIFEST_COLUMNS = ("id", "path", "masks", "calibration", "series", *STUDY_COLUMNS)
_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclasses.dataclass(frozen=True)
class Case:
    """One scan of a cohort. Paths are absolute; ``series_uid`` picks one series of a DICOM folder;
    ``dicom_study`` (non-DICOM scans only) puts DICOM results into that study."""

    id: str
    path: str
    masks: str | None = None
    calibration: str | None = None
    series_uid: str | None = None
    dicom_study: DicomStudy | None = None


# ------------------------------------------------------------------------------------------ cases


def read_cases(source: str | os.PathLike) -> list[Case]:
    """The cases of a CSV manifest (columns id, path and optionally masks, calibration, series, and
    for non-DICOM scans study_uid, patient_id, patient_name, accession_number, study_date; relative paths are relative to the manifest) or of a folder tree (each NIfTI/NRRD/MHA file one
    case, each DICOM series one case)."""
    source = Path(source)
    if source.is_file():
        cases = _cases_from_manifest(source)
    elif source.is_dir():
        cases = _cases_from_folder(source)
    else:
        raise InputError("no such manifest or folder", source)
    if not cases:
        raise InputError("no cases found (a manifest needs rows; a folder needs scans)", source)
    seen: set[str] = set()
    for case in cases:
        if case.id in seen:
            raise InputError(f"case id {case.id!r} appears twice", source)
        seen.add(case.id)
    return cases


def _cases_from_manifest(path: Path) -> list[Case]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in ("id", "path") if c not in columns]
        if missing:
            raise InputError(
                f"manifest lacks the column(s) {', '.join(missing)} (columns: id, path, masks, calibration, series)", path
            )
        unknown = [c for c in columns if c not in MANIFEST_COLUMNS]
        if unknown:
            raise InputError(f"manifest has unknown column(s) {', '.join(unknown)}", path)
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]

    def resolve(value: str) -> str | None:
        return str((path.parent / value).absolute()) if value else None

    cases = []
    for n, row in enumerate(rows, start=2):
        case_id = row.get("id", "")
        if not _SAFE_ID.match(case_id):
            raise InputError(f"line {n}: case id {case_id!r} must be letters, digits, '.', '_' or '-'", path)
        if not row.get("path"):
            raise InputError(f"line {n}: case {case_id!r} has no path", path)
        cases.append(
            Case(
                case_id,
                str(resolve(row["path"])),
                resolve(row.get("masks", "")),
                resolve(row.get("calibration", "")),
                row.get("series") or None,
                _study_of(row, f"{path}, line {n}"),
            )
        )
    return cases


def _study_of(row: dict, where: str) -> DicomStudy | None:
    given = {field: row.get(column, "") for column, field in STUDY_COLUMNS.items()}
    if not given["study_instance_uid"]:
        named = [column for column, field in STUDY_COLUMNS.items() if given[field]]
        if named:
            raise InputError(f"{', '.join(named)} need a study_uid (the study the DICOM results go into)", where)
        return None
    try:
        return DicomStudy(**given)
    except InputError as exc:  # named by its column ('--study-uid' is the study_uid column)
        column = (exc.source or "").removeprefix("--").replace("-", "_")
        raise InputError(f"{column}: {exc.problem}", where) from None


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_.-") or "case"


def _image_name(name: str) -> str | None:
    lower = name.lower()
    for suffix in _IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return None


def _dicom_series(folder: Path) -> list[str]:
    import SimpleITK as sitk

    return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or [])


def _has_dicom(folder: Path, files: list[str]) -> bool:
    for name in files:
        if name.lower().endswith(".dcm"):
            return True
        try:
            with open(folder / name, "rb") as f:
                if f.read(132)[128:] == b"DICM":
                    return True
        except OSError:
            continue
    return False


def _cases_from_folder(root: Path) -> list[Case]:
    cases = []
    for folder, dirs, files in os.walk(root):
        folder_path = Path(folder)
        dirs.sort()
        for d in list(dirs):
            if d.lower().endswith(".zarr"):  # a zarr volume is one case, not a tree to walk
                dirs.remove(d)
                cases.append(
                    Case(
                        _safe_id(str((folder_path / d).relative_to(root))[: -len(".zarr")]),
                        str((folder_path / d).absolute()),
                    )
                )
        for name in sorted(files):
            stem = _image_name(name)
            if stem is not None and not name.lower().endswith(".raw"):
                rel = (folder_path / stem).relative_to(root)
                cases.append(Case(_safe_id(str(rel)), str((folder_path / name).absolute())))
        if _has_dicom(folder_path, files):
            series = _dicom_series(folder_path)
            rel = folder_path.relative_to(root)
            base = _safe_id(str(rel)) if str(rel) != "." else _safe_id(root.name)
            for uid in series:
                case_id = base if len(series) == 1 else f"{base}__{_safe_id(uid)}"
                cases.append(Case(case_id, str(folder_path.absolute()), series_uid=uid if len(series) > 1 else None))
    return cases


# ------------------------------------------------------------------------------------------ keys


def _hash_path(digest, path: Path) -> None:
    """The bytes of a file, or the names and bytes of every file under a folder (sorted)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for p in files:
        if p != path:  # inside a folder the names matter; a single file may be renamed
            digest.update(str(p.relative_to(path)).encode())
        with open(p, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)


def input_hash(case: Case) -> str:
    """SHA-256 of the case's input files (scan, masks, calibration) and its series choice."""
    digest = hashlib.sha256()
    for role, value in (("scan", case.path), ("masks", case.masks), ("calibration", case.calibration)):
        if value is None:
            continue
        path = Path(value)
        if not path.exists():
            raise InputError(f"{role} file not found", path)
        digest.update(role.encode())
        _hash_path(digest, path)
    digest.update(f"series={case.series_uid}".encode())
    if case.dicom_study is not None:  # the DICOM results carry the study
        digest.update(repr(case.dicom_study).encode())
    return digest.hexdigest()


def config_hash(config, segmenter: dict) -> str:
    """SHA-256 of the resolved configuration (as report.json's config_sha256) and the segmenter
    settings (model folder, device)."""
    from volbmd.config import config_sha256

    text = json.dumps({"config": config_sha256(config), "segmenter": segmenter}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def case_key(input_sha: str, config_sha: str, version: str) -> str:
    return hashlib.sha256(f"{input_sha}:{config_sha}:{version}".encode()).hexdigest()[:20]


# ------------------------------------------------------------------------------------------ workers


class SegmenterCache(WorkerPlugin):
    """A Dask worker plugin that keeps one segmenter per settings for the worker's life: an nnU-Net
    or MONAI predictor is built (weights read, network set up) once per worker, not per case."""

    name = PLUGIN_NAME

    def __init__(self):
        self._segmenters: dict[str, object] = {}
        self.builds = 0

    def get(self, spec: dict):
        key = json.dumps(spec, sort_keys=True, default=str)
        if key not in self._segmenters:
            self._segmenters[key] = _build_segmenter(spec)
            self.builds += 1
        return self._segmenters[key]


def _build_segmenter(spec: dict, masks: str | None = None):
    from volbmd.segment.base import make_segmenter

    options = {"device": spec["device"]} if spec["backend"] in ("nnunet", "monai") else {}
    return make_segmenter(
        spec["backend"],
        masks=masks,
        label_scheme=spec.get("label_scheme") or "verse",
        model=spec.get("model"),
        classical=spec.get("classical"),
        **options,
    )


def _segmenter_for(case: Case, spec: dict):
    """The case's segmenter: its own masks, or the worker's cached predictor."""
    if case.masks is not None or spec["backend"] == "masks":
        if case.masks is None:
            raise InputError(f"case {case.id!r} has no masks (the masks backend needs a masks column)")
        return _build_segmenter({**spec, "backend": "masks"}, masks=case.masks)
    try:
        from distributed import get_worker

        cache: Any = get_worker().plugins.get(PLUGIN_NAME)
    except (ImportError, ValueError):  # not on a Dask worker
        cache = None
    if cache is None:
        return _build_segmenter(spec)
    return cache.get(spec)


def _summary_row(report) -> dict:
    levels = [v.level for v in report.vertebrae]
    flags = sorted({f for v in report.vertebrae for f in v.flags} | set(report.qa.warnings))
    return {
        "levels": ",".join(levels),
        "bmd_mg_cm3": {v.level: v.bmd_mg_cm3 for v in report.vertebrae},
        "bmd_mg_cm3_mean": report.summary.bmd_mg_cm3_mean,
        "category": report.summary.acr_category,
        "flags": "; ".join(flags),
    }


def run_case(case: Case, out_dir: str, config, spec: dict, key: str, labels_zarr: bool) -> dict:
    """Run one case on a worker: analyse, write its folder (swapped in whole), and its labels into
    the cohort's zarr store. Returns its row; an expected problem gives a failed row, not an error."""
    from volbmd.pipeline import analyze, write_outputs

    start = time.perf_counter()
    row: dict[str, Any] = {"id": case.id, "key": key, "status": "failed", "error": None}
    case_dir = Path(out_dir) / CASES_DIR / case.id
    try:
        if case.dicom_study is not None and is_dicom_series_path(case.path):
            raise InputError(
                "study_uid is for NIfTI, NRRD, MHA or Zarr scans: a DICOM series names its own study", case.path
            )
        segmenter = _segmenter_for(case, spec)
        report = analyze(case.path, config, segmenter=segmenter, calibration=case.calibration, series_uid=case.series_uid)
        write_outputs(report, case_dir, dicom_study=case.dicom_study)
        if labels_zarr:
            from volbmd.io.zarr_store import write_ome_zarr

            write_ome_zarr(report.artifacts.labels, Path(out_dir) / LABELS_ZARR / case.id)
        row.update(_summary_row(report), status="done")
    except VolbmdError as exc:
        row["error"] = str(exc)
    except MemoryError:
        row["error"] = "out of memory"
    except Exception as exc:  # a bug must not stop the cohort: the row says what happened
        row["error"] = f"internal error: {type(exc).__name__}: {exc}"
    if row["status"] == "failed" and case_dir.exists():  # a result of an earlier key would mislead
        shutil.rmtree(case_dir, ignore_errors=True)
    row["seconds"] = round(time.perf_counter() - start, 3)
    return row


# ------------------------------------------------------------------------------------------ status


def _status_path(out: Path, case_id: str) -> Path:
    return out / STATUS_DIR / f"{case_id}.json"


def _read_status(out: Path, case_id: str) -> dict | None:
    path = _status_path(out, case_id)
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _write_status(out: Path, row: dict) -> None:
    from volbmd.io import atomic_output

    with atomic_output(_status_path(out, row["id"])) as tmp:
        tmp.write_text(json.dumps(row, indent=1, sort_keys=True))


def _finished(out: Path, case: Case, key: str, retry_failed: bool, labels_zarr: bool) -> dict | None:
    """The case's row when it needs no run: finished with this key (and, when done, its folder and
    labels are there); failed with this key, unless failed cases are to be retried."""
    row = _read_status(out, case.id)
    if row is None or row.get("key") != key:
        return None
    if row.get("status") == "done":
        if not (out / CASES_DIR / case.id / "report.json").is_file():
            return None
        if labels_zarr and not (out / LABELS_ZARR / case.id).exists():
            return None
        return row
    return None if retry_failed else row


def cohort_table(out: str | os.PathLike, cases: list[Case] | None = None):
    """The cohort table (a pandas DataFrame) from the status files: one row per case, in the
    manifest's order when ``cases`` is given (cases without a status are left out)."""
    import pandas as pd

    out = Path(out)
    ids = [c.id for c in cases] if cases is not None else sorted(p.stem for p in (out / STATUS_DIR).glob("*.json"))
    rows = [r for r in (_read_status(out, i) for i in ids) if r is not None]
    levels: list[str] = []
    for r in rows:
        levels += [lvl for lvl in (r.get("bmd_mg_cm3") or {}) if lvl not in levels]
    from volbmd.labels import level_rank

    levels.sort(key=level_rank)
    records = []
    for r in rows:
        rec = {
            k: r.get(k)
            for k in (
                "id",
                "status",
                "error",
                "levels",
                "bmd_mg_cm3_mean",
                "category",
                "flags",
                "seconds",
                "input_hash",
                "config_hash",
                "volbmd_version",
            )
        }
        for lvl in levels:
            rec[f"bmd_{lvl}_mg_cm3"] = (r.get("bmd_mg_cm3") or {}).get(lvl)
        records.append(rec)
    return pd.DataFrame.from_records(records, columns=None if records else ["id", "status", "error"])


def _write_table(table, out: Path) -> None:
    from volbmd.io import atomic_output

    with atomic_output(out / "cohort.csv") as tmp:
        table.to_csv(tmp, index=False)
    with atomic_output(out / "cohort.parquet") as tmp:
        table.to_parquet(tmp, index=False)


# ------------------------------------------------------------------------------------------ cohort


def _remove_leftovers(out: Path) -> None:
    """Temporary files and folders of a run that was killed (they start with '.' and carry a
    .tmp- or .old- tag): never results, removed before a run."""
    for sub in (CASES_DIR, STATUS_DIR, LABELS_ZARR):
        for path in (out / sub).glob(".*"):
            if ".tmp-" in path.name or ".old-" in path.name:
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def _check_out(out: Path, cases: list[Case], source: Path) -> None:
    """Refuse, before any work, an output folder that would mix with the inputs or other files."""
    from volbmd.io.output_folder import check_writable_ancestor

    if source.is_dir() and out.absolute().is_relative_to(source.absolute()):
        raise InputError(
            "the output folder lies inside the input folder (its results would become cases); give a folder outside it", out
        )
    for case in cases:
        if Path(case.path).absolute().is_relative_to(out.absolute()):
            raise InputError(f"the output folder holds the input of case {case.id!r}; give a folder outside the inputs", out)
    if out.exists() and not out.is_dir():
        raise InputError("the output path exists and is a file; give a folder", out)
    if out.is_dir() and any(out.iterdir()) and not (out / STATUS_DIR).is_dir():
        raise InputError("the output folder holds files that are not a volbmd cohort; give a new or empty folder", out)
    check_writable_ancestor(out, out)


def _start_client(workers: int, scheduler: str | None, memory_limit: str | None = None):
    import dask
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout="10s"), None
        except (OSError, TimeoutError) as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"cannot reach the Dask scheduler ({detail})", scheduler) from None
    try:
        import bokeh  # noqa: F401

        dashboard = ":0"
    except ImportError:
        dashboard = None
    with dask.config.set({"distributed.scheduler.allowed-failures": 1, "distributed.worker.daemon": False}):
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=dashboard,
            memory_limit=memory_limit or "auto",
        )
    return Client(cluster), cluster


def run_cohort(
    manifest,
    out,
    *,
    client=None,
    workers: int = 2,
    scheduler: str | None = None,
    config=None,
    segmenter: str | None = None,
    model=None,
    device: str = "cpu",
    label_scheme: str | None = None,
    retry_failed: bool = False,
    labels_zarr: bool = False,
    progress: bool = False,
    memory_limit: str | None = None,
    report=None,
):
    """Run every case of ``manifest`` (a CSV file or a folder tree) into ``out`` on Dask.

    Args:
        client: a ``distributed.Client`` to use; else one to ``scheduler`` (an address), else a
            LocalCluster of ``workers`` processes with one thread each.
        config: a PipelineConfig or YAML path, as for :func:`volbmd.analyze`.
        segmenter, model, device, label_scheme: as for ``volbmd run`` (cases with masks use them).
        retry_failed: run again cases that failed with the same key.
        labels_zarr: also write every label map into ``out/labels.zarr`` (one group per case).
        progress: show a progress bar with ETA on stderr.
        memory_limit: memory per worker of the LocalCluster ("4GB"; default: the machine's memory
            shared between the workers); a worker above it is restarted and its case retried once.
        report: ``report(line)`` receives the dashboard address and the end summary.
    Returns:
        The cohort table (pandas DataFrame), also written to ``out/cohort.csv`` and ``.parquet``.
    """
    from importlib.metadata import version as package_version

    from volbmd.config import load_config

    out = Path(out).absolute()
    cases = read_cases(manifest)
    _check_out(out, cases, Path(manifest))
    overrides: dict = {"segmentation": {}}
    if segmenter:
        overrides["segmentation"]["backend"] = segmenter
    if label_scheme:
        overrides["segmentation"]["label_scheme"] = label_scheme
    cfg = config if hasattr(config, "model_dump") else load_config(config, overrides)
    backend = cfg.segmentation.backend
    if segmenter is None and backend == "classical" and all(c.masks for c in cases):
        backend = "masks"  # like `volbmd run --masks`
    spec = {
        "backend": backend,
        "model": None if model is None else str(Path(model).absolute()),
        "device": device,
        "label_scheme": cfg.segmentation.label_scheme,
        "classical": cfg.segmentation.classical.model_dump(mode="json"),
    }
    if spec["backend"] in ("nnunet", "monai") and model is None:
        raise ConfigError(f"the {spec['backend']} segmenter needs a model folder (--model)")
    volbmd_version = package_version("volbmd")
    config_sha = config_hash(cfg, spec)
    say = report or (lambda line: None)
    for sub in (STATUS_DIR, CASES_DIR):
        (out / sub).mkdir(parents=True, exist_ok=True)
    _remove_leftovers(out)
    if labels_zarr:
        import zarr

        zarr.open_group(str(out / LABELS_ZARR), mode="a", zarr_format=3)

    todo, skipped, started = [], 0, time.perf_counter()
    for case in cases:
        base = {"id": case.id, "config_hash": config_sha, "volbmd_version": volbmd_version}
        try:
            input_sha = input_hash(case)
        except (VolbmdError, OSError) as exc:
            _write_status(
                out, {**base, "status": "failed", "error": str(exc), "key": None, "input_hash": None, "seconds": 0.0}
            )
            continue
        key = case_key(input_sha, config_sha, volbmd_version)
        if _finished(out, case, key, retry_failed, labels_zarr) is not None:
            skipped += 1
            continue
        todo.append((case, {**base, "input_hash": input_sha}, key))

    own_cluster = None
    if todo:
        if client is None:
            client, own_cluster = _start_client(workers, scheduler, memory_limit)
        try:
            _run_on(client, todo, out, cfg, spec, labels_zarr, progress, say)
        finally:
            if own_cluster is not None:
                client.close()
                own_cluster.close()
    table = cohort_table(out, cases)
    _write_table(table, out)
    n_done = int((table["status"] == "done").sum()) if len(table) else 0
    n_failed = int((table["status"] == "failed").sum()) if len(table) else 0
    elapsed = time.perf_counter() - started
    per_case = f", {elapsed / len(todo):.1f} s per case run" if todo else ""
    say(
        f"{len(cases)} cases: {n_done} done, {n_failed} failed, {skipped} skipped (finished before); "
        f"{len(todo)} run in {elapsed:.1f} s{per_case}"
    )
    return table


def _run_on(client, todo, out: Path, cfg, spec: dict, labels_zarr: bool, progress: bool, say) -> None:
    from distributed import as_completed

    if client.dashboard_link and "None" not in client.dashboard_link:
        say(f"Dask dashboard: {client.dashboard_link}")
    client.register_plugin(SegmenterCache(), name=PLUGIN_NAME)
    futures = {}
    for case, base, key in todo:
        future = client.submit(
            run_case, case, str(out), cfg, spec, key, labels_zarr, pure=False, key=f"volbmd-case-{case.id}-{key[:8]}"
        )
        futures[future] = (case, base, key)
    bar = _progress_bar(len(futures)) if progress else None
    try:
        for future in as_completed(list(futures)):
            case, base, key = futures[future]
            try:
                row = future.result()
            except Exception as exc:  # the worker died twice (KilledWorker) or the task could not run
                name = type(exc).__name__
                error = (
                    "the worker running this case died twice (killed or out of memory)"
                    if name == "KilledWorker"
                    else f"{name}: {exc}"
                )
                row = {"id": case.id, "key": key, "status": "failed", "error": error, "seconds": None}
            _write_status(out, {**base, **row})
            del futures[future]
            future.release()  # its result lives on a worker: a worker lost later must not recompute it
            if bar is not None:
                bar[0].update(bar[1], advance=1)
    finally:
        if bar is not None:
            bar[0].__exit__(None, None, None)


def _progress_bar(total: int):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn("volbmd batch"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    bar.__enter__()
    return bar, bar.add_task("cases", total=total)

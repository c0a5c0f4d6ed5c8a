"""The ``volbmd`` command line (Typer). Thin: parse, call the library, print.

Expected problems (:class:`volbmd.errors.VolbmdError`) print one line ``volbmd: error: <what>`` on
stderr and exit with code 2; heavy libraries are imported inside the commands that need them.
"""

from __future__ import annotations

import enum
import gc
import json
import sys
from pathlib import Path

import typer

from volbmd.cli_common import EXIT_BAD_INPUT, _fail, handles_input_errors
from volbmd.errors import InputError
from volbmd.segment.base import DEVICE_BACKENDS, backends_help

app = typer.Typer(
    name="volbmd",
    help="Vertebral bone mineral density from routine CT and MRI scans.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


class ContrastPhase(str, enum.Enum):
    native = "native"
    arterial = "arterial"
    portal_venous = "portal_venous"


class Device(str, enum.Enum):
    """Where a network runs: ``auto`` takes CUDA when present."""

    cpu = "cpu"
    cuda = "cuda"
    auto = "auto"


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"volbmd {version('volbmd')}")
        raise typer.Exit(0)


@app.callback()
def _main_options(
    show_version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print volbmd's version and exit."
    ),
) -> None:
    """Vertebral bone mineral density from routine CT and MRI scans."""


@app.command()
@handles_input_errors
def info(
    scan: Path = typer.Argument(..., help="DICOM folder, .nii/.nii.gz, .nrrd, .mha/.mhd or .zarr"),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    series: str | None = typer.Option(None, "--series", help="SeriesInstanceUID to read from a DICOM folder."),
    show_phi: bool = typer.Option(False, "--show-phi", help="Also print patient name, ID and dates."),
):
    """Describe a scan: grid, orientation, HU range and scanner metadata."""
    from volbmd.describe import describe_volume
    from volbmd.io import load_volume

    facts = describe_volume(load_volume(scan, series_uid=series), show_phi=show_phi)
    if json_out:
        typer.echo(json.dumps(facts, indent=2, default=str))
        return
    _print_info(facts)


def _fmt_number(v: float) -> str:
    """At most three decimals, at least one: 2.0, 0.977, -249.512."""
    text = f"{v:.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _print_info(facts: dict) -> None:
    from rich.table import Table

    from volbmd.console import make_console

    table = Table(title=str(facts["source"]), show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("size (x×y×z)", "×".join(str(n) for n in facts["size_xyz"]) + " voxels")
    # one axis order throughout, as DICOM viewers and ITK print it: x, y, z
    table.add_row("spacing (x×y×z)", "×".join(_fmt_number(s) for s in facts["spacing_mm_zyx"][::-1]) + " mm")
    table.add_row("field of view (x×y×z)", "×".join(_fmt_number(s) for s in facts["field_of_view_mm_zyx"][::-1]) + " mm")
    table.add_row(
        "orientation", facts["orientation"] + (f" (oblique {facts['oblique_deg']}°)" if facts["oblique_deg"] > 0.01 else "")
    )
    table.add_row("origin (LPS)", ", ".join(_fmt_number(v) for v in facts["origin_lps_mm"]) + " mm")
    lo, hi = facts["value_range"]
    table.add_row("value range", f"{_fmt_number(lo)} to {_fmt_number(hi)} {facts['value_unit']} ({facts['dtype']})")
    for key, value in facts["metadata"].items():
        if value not in (None, [], {}, ""):
            table.add_row(key.replace("_", " "), str(value))
    for key, value in facts.get("phi", {}).items():
        table.add_row(key.replace("_", " "), str(value))
    make_console().print(table)


@app.command()
@handles_input_errors
def convert(
    src: Path = typer.Argument(..., help="Any scan volbmd reads."),
    dst: Path = typer.Argument(..., help="Output: .nii, .nii.gz, .nrrd, .mha or .ome.zarr"),
    series: str | None = typer.Option(None, "--series", help="SeriesInstanceUID to read from a DICOM folder."),
):
    """Convert a scan to another format, keeping its grid and voxel values exactly."""
    from volbmd.io import load_volume, write_volume
    from volbmd.io.output_folder import check_output_file

    check_output_file(dst)
    volume = load_volume(src, series_uid=series)
    write_volume(volume, dst)
    typer.echo(f"wrote {dst} ({'×'.join(str(n) for n in volume.shape[::-1])} voxels)")


@app.command()
@handles_input_errors
def run(
    scan: Path = typer.Argument(..., help="The CT: DICOM folder, .nii/.nii.gz, .nrrd, .mha/.mhd or .zarr"),
    out: Path = typer.Option(..., "--out", help="Output folder (report.json, vertebrae.csv, labels.nii.gz)."),
    segmenter: str | None = typer.Option(
        None, "--segmenter", help=backends_help("masks when --masks is given, else classical")
    ),
    masks: Path | None = typer.Option(
        None, "--masks", help="Multilabel mask file, or a folder of vertebrae_L1.nii.gz-style files."
    ),
    model: Path | None = typer.Option(None, "--model", help="nnU-Net model folder, or AnatomyNet checkpoint for monai."),
    device: Device = typer.Option(Device.cpu, "--device", help=f"Where {' and '.join(DEVICE_BACKENDS)} run."),
    label_scheme: str | None = typer.Option(None, "--label-scheme", help="Ids of a multilabel mask: verse | totalseg."),
    config: Path | None = typer.Option(None, "--config", help="YAML overriding configs/pipeline/default.yaml."),
    levels: str | None = typer.Option(None, "--levels", help="Levels to report, e.g. L1,L2,L3 (missing ones are flagged)."),
    roi: str | None = typer.Option(None, "--roi", help="Trabecular ROI: eroded_body | mid_slab_ellipse."),
    cortical_depth_mm: float | None = typer.Option(
        None, "--cortical-depth-mm", help="Cortical stripping depth (default auto)."
    ),
    repeat_draws: int | None = typer.Option(
        None,
        "--repeat-draws",
        min=0,
        max=20,
        help="Measure each BMD's SD by analysing this many noisy copies again (3+; one more analysis each).",
    ),
    series: str | None = typer.Option(None, "--series", help="SeriesInstanceUID to read from a DICOM folder."),
    calibration: Path | None = typer.Option(
        None, "--calibration", help="calibration.json from 'volbmd calibrate' (else internal calibration)."
    ),
    threshold_set: str | None = typer.Option(None, "--thresholds", help="Threshold set: acr | east-asian | a YAML file."),
    kvp: float | None = typer.Option(
        None,
        "--kvp",
        min=40,
        max=160,
        help="Tube voltage when the file does not record it (NIfTI): enables the L1 HU screen and kVp checks.",
    ),
    contrast_phase: ContrastPhase | None = typer.Option(
        None, "--contrast-phase", help="Contrast phase when the file does not record it."
    ),
    bmd_model: Path | None = typer.Option(
        None, "--bmd-model", help="A model folder from 'volbmd train bmd': adds the network's BMD ± SD per level."
    ),
    study_uid: str | None = typer.Option(
        None,
        "--study-uid",
        help="StudyInstanceUID of a NIfTI/NRRD/MHA scan: DICOM results (with a derived CT series) are written into that study.",
    ),
    patient_id: str = typer.Option("", "--patient-id", help="PatientID for the DICOM results of a non-DICOM scan."),
    patient_name: str = typer.Option("", "--patient-name", help="PatientName (Family^Given) for those results."),
    accession_number: str = typer.Option("", "--accession-number", help="AccessionNumber for those results."),
    study_date: str = typer.Option("", "--study-date", help="StudyDate (YYYYMMDD) for those results."),
):
    """Measure trabecular bone per vertebra, calibrate to mg/cm³, classify; write report.json and vertebrae.csv."""
    from volbmd.config import load_config
    from volbmd.io.output_folder import check_output_folder
    from volbmd.pipeline import run_pipeline

    check_output_folder(out)  # before hours of work, not after
    dicom_study = _dicom_study(scan, study_uid, patient_id, patient_name, accession_number, study_date)
    overrides: dict = {"segmentation": {}, "measurement": {}}
    if segmenter or masks is not None:
        overrides["segmentation"]["backend"] = segmenter or "masks"
    if label_scheme:
        overrides["segmentation"]["label_scheme"] = label_scheme
    if roi:
        overrides["measurement"]["roi"] = roi
    if cortical_depth_mm is not None:
        overrides["measurement"]["cortical_depth_mm"] = cortical_depth_mm
    if threshold_set:
        overrides["classification"] = {"threshold_set": threshold_set}
    if repeat_draws is not None:
        overrides["uncertainty"] = {"repeat_draws": repeat_draws}
    cfg = load_config(config, overrides)
    level_list = [s.strip() for s in levels.split(",") if s.strip()] if levels else None
    seg = _segmenter(cfg, masks, model, device)
    with _stage_progress() as progress:
        acquisition = {"kvp": kvp, "contrast_phase": None if contrast_phase is None else contrast_phase.value}
        report = run_pipeline(
            scan,
            out,
            segmenter=seg,
            config=cfg,
            levels=level_list,
            series_uid=series,
            calibration=calibration,
            progress=progress,
            acquisition={k: v for k, v in acquisition.items() if v is not None},
            dicom_study=dicom_study,
            bmd_model=_loaded_bmd_model(bmd_model),
        )
    _print_levels(report)
    typer.echo(f"wrote {', '.join(report.outputs or [])} to {out}")


def _loaded_bmd_model(path: Path | None):
    """The BMD regressor, loaded before the analysis so that a bad folder fails first."""
    if path is None:
        return None
    from volbmd.models.bmd_regressor import BmdRegressor

    return BmdRegressor(path)


def _dicom_study(scan: Path, study_uid, patient_id, patient_name, accession_number, study_date):
    """The study identifiers given for a non-DICOM scan (None when none were), checked up front."""
    from volbmd.io import is_dicom_series_path
    from volbmd.report.dicom_study import DicomStudy

    given = {"--patient-id": patient_id, "--patient-name": patient_name, "--accession-number": accession_number}
    given["--study-date"] = study_date
    if study_uid is None:
        named = [option for option, value in given.items() if value]
        if named:
            raise InputError(f"{', '.join(named)} need --study-uid (the study the DICOM results go into)", scan)
        return None
    if is_dicom_series_path(scan):
        raise InputError("--study-uid is for NIfTI, NRRD, MHA or Zarr scans: a DICOM series names its own study", scan)
    return DicomStudy(
        study_instance_uid=study_uid,
        patient_id=patient_id,
        patient_name=patient_name,
        accession_number=accession_number,
        study_date=study_date,
    )


class _stage_progress:
    """A rich progress bar over the pipeline's stages (stderr, so stdout stays clean)."""

    def __enter__(self):
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        from volbmd.pipeline import STAGES

        self._stages = list(STAGES)
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=Console(stderr=True), transient=True
        )
        self._progress.__enter__()
        self._task = self._progress.add_task(f"volbmd: {self._stages[0]}", total=len(self._stages))
        return self

    def __call__(self, stage: str, seconds: float) -> None:
        if stage not in self._stages:  # an optional stage (repeat draws)
            return
        done = self._stages.index(stage) + 1
        label = self._stages[done] if done < len(self._stages) else "done"
        self._progress.update(self._task, completed=done, description=f"volbmd: {label}")

    def __exit__(self, *exc):
        return self._progress.__exit__(*exc)


def _device_name(device) -> str:
    """cpu or cuda: ``auto`` takes CUDA when torch sees a GPU (torch is imported only then)."""
    name = getattr(device, "value", device)
    if name == "auto":
        import torch

        name = "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _segmenter(cfg, masks, model, device):
    from volbmd.segment.base import make_segmenter

    backend = cfg.segmentation.backend
    options = {"device": _device_name(device)} if backend in DEVICE_BACKENDS else {}
    return make_segmenter(
        backend,
        masks=masks,
        label_scheme=cfg.segmentation.label_scheme,
        model=model,
        classical=cfg.segmentation.classical,
        **options,
    )


@app.command()
@handles_input_errors
def batch(
    source: Path = typer.Argument(
        ...,
        help="A CSV manifest (columns id, path and optionally masks, calibration, series) or a folder of scans (each NIfTI/NRRD/MHA file and each DICOM series one case).",
    ),
    out: Path = typer.Option(..., "--out", help="Cohort folder: cases/<id>/, status/, cohort.csv, cohort.parquet."),
    workers: int = typer.Option(
        2, "--workers", min=1, help="Worker processes of the local Dask cluster (one case in flight each)."
    ),
    scheduler: str | None = typer.Option(
        None, "--scheduler", help="Address of a running Dask scheduler (tcp://host:8786) instead of a local cluster."
    ),
    config: Path | None = typer.Option(None, "--config", help="YAML overriding configs/pipeline/default.yaml."),
    segmenter: str | None = typer.Option(
        None, "--segmenter", help=backends_help("masks for cases with masks, else classical")
    ),
    model: Path | None = typer.Option(None, "--model", help="nnU-Net model folder, or AnatomyNet checkpoint for monai."),
    device: Device = typer.Option(Device.cpu, "--device", help=f"Where {' and '.join(DEVICE_BACKENDS)} run."),
    label_scheme: str | None = typer.Option(None, "--label-scheme", help="Ids of multilabel masks: verse | totalseg."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Run again the cases that failed before."),
    labels_zarr: bool = typer.Option(
        False, "--labels-zarr", help="Also write every label map into OUT/labels.zarr (one group per case)."
    ),
    memory_limit: str | None = typer.Option(
        None,
        "--memory-limit",
        help="Memory per local worker, e.g. 4GB (default: the machine's memory shared between the workers).",
    ),
):
    """Run a cohort on Dask: resumable (finished cases are skipped), one bad case never stops the others.

    Exit code 0 when the cohort ran, failed cases included (see the status and error columns of
    cohort.csv); 2 for a bad manifest, folder or option."""
    from volbmd.batch import run_cohort

    table = run_cohort(
        source,
        out,
        workers=workers,
        scheduler=scheduler,
        config=config,
        segmenter=segmenter,
        model=model,
        device=_device_name(device),
        label_scheme=label_scheme,
        retry_failed=retry_failed,
        labels_zarr=labels_zarr,
        progress=True,
        memory_limit=memory_limit,
        report=lambda line: typer.echo(line, err=True),
    )
    failed = table[table["status"] == "failed"]
    for _, row in failed.iterrows():
        typer.echo(f"failed: {row['id']}: {row['error']}", err=True)
    typer.echo(f"wrote cohort.csv and cohort.parquet ({len(table)} cases) to {out}")


@app.command()
@handles_input_errors
def send(
    run_dir: Path = typer.Argument(..., help="A run folder with DICOM results (dicom_seg.dcm, dicom_sr.dcm, dicom_sc.dcm)."),
    to: str = typer.Option(..., "--to", help="The DICOM node, HOST:PORT."),
    aet: str = typer.Option("VOLBMD", "--aet", help="Our application entity title (calling AE)."),
    called_aet: str = typer.Option("ANY-SCP", "--called-aet", help="The node's application entity title."),
    timeout_s: float = typer.Option(30.0, "--timeout-s", min=1, help="Seconds to wait for the node."),
):
    """Send a run's DICOM results to a PACS node (C-STORE); what it stored is recorded in sent.json."""
    from volbmd.io.dicom_send import send_results

    sent = send_results(run_dir, to, calling_aet=aet, called_aet=called_aet, timeout_s=timeout_s)
    typer.echo(f"sent {', '.join(e['file'] for e in sent)} to {to} ({called_aet}); recorded in {run_dir / 'sent.json'}")


@app.command()
@handles_input_errors
def segment(
    scan: Path = typer.Argument(..., help="The CT: DICOM folder, .nii/.nii.gz, .nrrd, .mha/.mhd or .zarr"),
    out: Path = typer.Option(..., "--out", help="Label map to write (VerSe ids, the scan's own grid), e.g. labels.nii.gz"),
    segmenter: str | None = typer.Option(
        None, "--segmenter", help=backends_help("masks when --masks is given, else classical")
    ),
    model: Path | None = typer.Option(None, "--model", help="nnU-Net model folder, or AnatomyNet checkpoint for monai."),
    masks: Path | None = typer.Option(None, "--masks", help="Masks to import (segmenter masks)."),
    label_scheme: str = typer.Option(
        "verse", "--label-scheme", help="Ids of an imported multilabel mask: verse | totalseg."
    ),
    device: Device = typer.Option(Device.cpu, "--device", help=f"Where {' and '.join(DEVICE_BACKENDS)} run."),
    series: str | None = typer.Option(None, "--series", help="SeriesInstanceUID to read from a DICOM folder."),
):
    """Find and label the vertebrae; write a label map with VerSe ids on the scan's grid."""
    from volbmd.config import load_config
    from volbmd.io import load_volume, write_labels
    from volbmd.io.output_folder import check_output_file

    check_output_file(out)
    backend = segmenter or ("masks" if masks is not None else "classical")
    cfg = load_config(overrides={"segmentation": {"backend": backend, "label_scheme": label_scheme}})
    seg = _segmenter(cfg, masks, model, device)
    volume = load_volume(scan, series_uid=series)
    labels = seg.segment(volume)
    write_labels(labels, out, source=volume)
    flags = labels.metadata.get("flags", [])
    typer.echo(f"{backend}: {', '.join(labels.labels) or 'no vertebrae'}" + (f" ({'; '.join(flags)})" if flags else ""))
    typer.echo(f"wrote {out}")


def _print_levels(report) -> None:
    from rich.table import Table

    from volbmd.classify import in_words
    from volbmd.console import make_console

    m = report.measurement
    depth = "–" if m is None or m.cortical_depth_mm is None else f"{m.cortical_depth_mm:g}"
    table = Table(
        title_justify="left",
        title=f"{report.input.path}: ROI {m and m.roi}, cortical depth {depth} mm ({m and m.cortical_depth_rule})",
    )
    for col in (
        "level",
        "body ml",
        "n voxels",
        "HU mean",
        "HU median",
        "HU SD",
        "BMD mg/cm³",
        "heights A/M/P mm",
        "Genant",
        "flags",
    ):
        table.add_column(col)
    dl = any(v.bmd_dl_mg_cm3 is not None for v in report.vertebrae)
    if dl:
        table.add_column("DL BMD mg/cm³")

    def f(v, fmt="{:.1f}"):
        return "–" if v is None else fmt.format(v)

    for v in report.vertebrae:
        h = v.heights_mm
        table.add_row(
            v.level,
            f(v.body_volume_ml),
            str(v.trabecular_n_voxels),
            f(v.trabecular_hu_mean),
            f(v.trabecular_hu_median),
            f(v.trabecular_hu_sd),
            f(v.bmd_mg_cm3) + ("" if v.bmd_mg_cm3 is None or v.bmd_sd_mg_cm3 is None else f" ± {v.bmd_sd_mg_cm3:.1f}"),
            "/".join(f(x) for x in (h.anterior, h.middle, h.posterior)),
            f(v.genant_grade, "{}"),
            ", ".join(v.flags),
            *([f(v.bmd_dl_mg_cm3) + ("" if v.bmd_dl_sd_mg_cm3 is None else f" ± {v.bmd_dl_sd_mg_cm3:.1f}")] if dl else []),
        )
    console = make_console()
    console.print(table)
    cal, summ = report.calibration, report.summary
    if cal.method == "none":
        console.print("calibration: none (HU only)")
    else:
        console.print(
            f"calibration: {cal.method}, {cal.material}, density = {cal.slope:.5f}·HU + {cal.intercept:.3f} mg/cm³"
            + (f", R² {cal.r2:.4f}" if cal.r2 is not None else "")
        )
        sd = summ.bmd_sd_mg_cm3
        mean = (
            "–"
            if summ.bmd_mg_cm3_mean is None
            else f"{summ.bmd_mg_cm3_mean:.1f}" + (f" ± {sd:.1f}" if sd is not None else "")
        )
        console.print(
            f"summary: BMD {mean} mg/cm³ {summ.material or ''} over {'+'.join(summ.levels_used) or '–'}"
            f" → {in_words(summ.acr_category, 'not classified')}" + (" (borderline)" if summ.borderline else "")
        )
    if summ.l1_screen:
        console.print(f"L1 screen: {summ.l1_hu:.1f} HU → {in_words(summ.l1_screen)}")
    for note in summ.classification_notes:
        console.print(f"note: {note}")
    for w in report.qa.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")


calibrate_app = typer.Typer(help="Make a calibration.json from a phantom scan or rod HU values.", no_args_is_help=True)
app.add_typer(calibrate_app, name="calibrate")

from volbmd.cli_mri import mri_app  # noqa: E402  (kept here: its commands share nothing else with this module)

app.add_typer(mri_app, name="mri")

from volbmd.cli_models import evaluate, train_app  # noqa: E402

app.add_typer(train_app, name="train")
app.command()(evaluate)


def _save_and_print_calibration(cal, out: Path) -> None:
    from volbmd.calibrate.base import save_calibration

    save_calibration(cal, out)
    typer.echo(
        f"{cal.phantom} ({cal.model}, {cal.material}): density = {cal.slope:.5f}·HU + {cal.intercept:.4f} mg/cm³, "
        f"R² = {cal.r2:.5f}"
    )
    for rod in cal.rods:
        typer.echo(
            f"  rod {rod.name}: {rod.density_mg_cm3:g} mg/cm³, {rod.hu:.2f} HU, residual {rod.residual_mg_cm3:+.2f} mg/cm³"
        )
    for w in cal.warnings:
        typer.echo(f"warning: {w}")
    typer.echo(f"wrote {out}")


@calibrate_app.command("phantom")
@handles_input_errors
def calibrate_phantom(
    scan: Path = typer.Argument(..., help="A CT with the calibration phantom in the field of view."),
    phantom: str = typer.Option(..., "--phantom", help="Phantom name (bmas200, mindways-model3, …) or certificate .yaml."),
    rods: Path | None = typer.Option(
        None, "--rods", help="Rod mask on the scan's grid: label k = rod k (certificate order)."
    ),
    out: Path = typer.Option(Path("calibration.json"), "--out", help="Where to write calibration.json."),
    config: Path | None = typer.Option(None, "--config", help="YAML with calibration gates."),
    series: str | None = typer.Option(None, "--series", help="SeriesInstanceUID to read from a DICOM folder."),
):
    """Calibrate from the phantom rods in a scan (found automatically, or from --rods MASK)."""
    from volbmd.calibrate.base import ScannerInfo
    from volbmd.calibrate.phantom import calibrate_from_hu, find_rods, load_phantom, rod_hu_from_mask
    from volbmd.config import load_config
    from volbmd.io import load_volume

    cfg = load_config(config)
    definition = load_phantom(phantom)
    volume = load_volume(scan, series_uid=series)
    if rods is not None:
        hu, counts = rod_hu_from_mask(volume, load_volume(rods), len(definition.rods))
    else:
        hu, counts, _ = find_rods(volume, definition)
    meta = volume.metadata
    scanner = ScannerInfo(
        manufacturer=meta.get("manufacturer"),
        model=meta.get("manufacturer_model"),
        kvp=meta.get("kvp"),
        convolution_kernel=meta.get("convolution_kernel"),
        date=(meta.get("phi") or {}).get("study_date"),
    )
    _save_and_print_calibration(calibrate_from_hu(definition, hu, cfg.calibration, n_voxels=counts, scanner=scanner), out)


@calibrate_app.command("rods")
@handles_input_errors
def calibrate_rods(
    phantom: str = typer.Option(..., "--phantom", help="Phantom name or certificate .yaml."),
    hu: str = typer.Option(..., "--hu", help="Mean HU of each rod, in certificate order: v1,v2,…"),
    out: Path = typer.Option(Path("calibration.json"), "--out", help="Where to write calibration.json."),
    kvp: float | None = typer.Option(None, "--kvp", help="kVp of the phantom scan (recorded for later checks)."),
    kernel: str | None = typer.Option(None, "--kernel", help="Reconstruction kernel of the phantom scan."),
    manufacturer: str | None = typer.Option(None, "--manufacturer", help="Scanner manufacturer."),
    config: Path | None = typer.Option(None, "--config", help="YAML with calibration gates."),
):
    """Calibrate from rod HU values measured elsewhere."""
    from volbmd.calibrate.base import ScannerInfo
    from volbmd.calibrate.phantom import calibrate_from_hu, load_phantom
    from volbmd.config import load_config

    try:
        values = [float(v) for v in hu.split(",") if v.strip()]
    except ValueError:
        _fail(f"--hu must be comma-separated numbers, got '{hu}'")
    cfg = load_config(config)
    scanner = ScannerInfo(manufacturer=manufacturer, kvp=kvp, convolution_kernel=kernel)
    _save_and_print_calibration(calibrate_from_hu(load_phantom(phantom), values, cfg.calibration, scanner=scanner), out)


@app.command()
@handles_input_errors
def demo(
    out: Path = typer.Option(Path("volbmd-demo"), "--out", help="Folder for the demo's outputs."),
):
    """Run volbmd on the embedded digital spine phantom (no input needed)."""
    from volbmd.demo import run_demo
    from volbmd.io.output_folder import check_output_folder

    check_output_folder(out)
    run_demo(out)


@app.command()
@handles_input_errors
def review(run_dir: Path = typer.Argument(..., help="A run folder written by volbmd run or volbmd demo.")):
    """Open napari on a run: scan, labels and ROIs, with the Review widget docked."""
    from volbmd.review import ReviewSession

    ReviewSession(run_dir)  # a clear error before a window opens
    _check_display()
    import napari

    from volbmd.napari._widgets import ReviewWidget

    viewer = napari.Viewer(title=f"volbmd review: {run_dir.name}")
    viewer.window.add_dock_widget(ReviewWidget(viewer, str(run_dir)), name="volbmd Review", area="right")
    napari.run()


def _check_display() -> None:
    """On Linux without a display Qt aborts the process; say how to run the review instead."""
    import os

    if not sys.platform.startswith("linux"):
        return
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.environ.get("QT_QPA_PLATFORM"):
        return
    _fail(
        "no display to open napari on: run it on a desktop session, or headless as 'xvfb-run volbmd review DIR' "
        "(QT_QPA_PLATFORM=offscreen also starts, without OpenGL)"
    )


def main() -> int:
    """Run the command line; a usage mistake is one ``volbmd: error:`` line and exit code 2, like
    any other expected error (no boxes)."""
    try:  # Typer vendors click's exceptions (typer._click) since 0.2x; older ones use click itself
        from typer._click.exceptions import NoArgsIsHelpError, UsageError
    except ImportError:  # pragma: no cover
        from click.exceptions import NoArgsIsHelpError, UsageError  # type: ignore[assignment]

    try:
        result = app(standalone_mode=False, prog_name="volbmd")
    except NoArgsIsHelpError as exc:  # `volbmd` or `volbmd calibrate` alone: the help
        typer.echo(exc.ctx.get_help() if exc.ctx else str(exc), err=True)
        return EXIT_BAD_INPUT
    except UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "volbmd"
        typer.echo(f"volbmd: error: {exc.format_message()} (see '{where} --help')", err=True)
        return EXIT_BAD_INPUT
    except typer.Abort:
        typer.echo("volbmd: aborted", err=True)
        return 130
    return result if isinstance(result, int) else 0


def program() -> None:
    """The ``volbmd`` program: :func:`main`, then exit. Before exiting, the objects of the run are
    frozen out of the garbage collector, so that the interpreter's last collection does not walk
    the million objects numba and scipy leave (about 0.2 s of every command). Outputs are closed
    by then; only the process ends."""
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    program()

"""Orchestration only: scan → labels → measurement → report."""

from __future__ import annotations

import dataclasses
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from volbmd.config import PipelineConfig, config_sha256, load_config, merge_settings
from volbmd.errors import ConfigError, InputError
from volbmd.flags import is_warning
from volbmd.io import load_volume, write_labels
from volbmd.report import Report, write_report
from volbmd.volume import LabelMap, Volume

if TYPE_CHECKING:
    from volbmd.calibrate.base import Calibration
    from volbmd.measure import MeasurementResult
    from volbmd.report.dicom_study import DicomStudy

__all__ = [
    "analyze",
    "write_outputs",
    "build_report",
    "run_pipeline",
    "calibrate_and_classify",
    "CalibratedResult",
    "Artifacts",
    "STAGES",
]


@dataclass
class CalibratedResult:
    calibration: Calibration
    bmd_by_level: dict[str, float | None]
    hu_correction: float
    contrast_phase: str | None
    summary: dict
    warnings: list[str]
    bmd_sd_by_level: dict[str, float | None] = dataclasses.field(default_factory=dict)
    #: the SDs from noise and calibration statistics alone (as if the masks were fixed): the least a
    #: repeat scan moves the value, whatever the segmenter does
    bmd_sd_fixed_by_level: dict[str, float | None] = dataclasses.field(default_factory=dict)
    summary_sd_fixed: float | None = None


def calibrate_and_classify(
    volume: Volume,
    labels: LabelMap,
    result: MeasurementResult,
    config: PipelineConfig,
    calibration: Calibration | None = None,
    *,
    masks_given: bool = False,
    tissues: dict[str, dict] | None = None,
) -> CalibratedResult:
    """Calibrate (``calibrate.choose``), then classify (``classify.summarize_levels``); ``tissues``
    are the internal calibration's reference tissues when already found."""
    from volbmd.calibrate.choose import calibrate_levels
    from volbmd.classify import summarize_levels

    d = calibrate_levels(volume, labels, result, config, calibration, masks_given=masks_given, tissues=tissues)
    summary, notes, summary_sd_fixed = summarize_levels(volume, result, d, config)
    return CalibratedResult(
        d.calibration,
        d.bmd_by_level,
        d.hu_correction,
        d.contrast_phase,
        summary,
        d.warnings + notes,
        d.bmd_sd_by_level,
        d.bmd_sd_fixed_by_level,
        summary_sd_fixed,
    )


def _input_info(volume: Volume, path: str | None) -> dict:
    meta = volume.metadata
    contrast = meta.get("contrast_phase") or ("contrast (agent recorded)" if meta.get("contrast_agent") else None)
    return {
        # the scan's own name only: full paths often carry patient names
        "path": Path(path).name if path else (volume.source or "in-memory volume"),
        "modality": meta.get("modality"),
        "shape": list(volume.shape),
        "spacing_mm": [float(s) for s in volume.spacing_mm],
        "kvp": meta.get("kvp"),
        "contrast_phase": contrast,
        "slice_thickness_mm": meta.get("slice_thickness_mm") or float(volume.spacing_mm[0]),
        "convolution_kernel": meta.get("convolution_kernel"),
        "manufacturer": meta.get("manufacturer"),
    }


def build_report(
    volume: Volume,
    labels: LabelMap,
    result: MeasurementResult,
    *,
    backend: str,
    scan_path: str | None = None,
    timings_s: dict | None = None,
    calibrated: CalibratedResult | None = None,
    config_sha256: str | None = None,
) -> Report:
    from volbmd import __version__

    vertebrae = []
    for m in result.levels:
        vertebrae.append(
            {
                "level": m.level,
                "body_volume_ml": m.body_volume_ml,
                "trabecular_hu_mean": m.trabecular_hu_mean,
                "trabecular_hu_median": m.trabecular_hu_median,
                "trabecular_hu_sd": m.trabecular_hu_sd,
                "trabecular_n_voxels": m.trabecular_n_voxels,
                "bmd_mg_cm3": None if calibrated is None else calibrated.bmd_by_level.get(m.level),
                "bmd_sd_mg_cm3": None if calibrated is None else calibrated.bmd_sd_by_level.get(m.level),
                "heights_mm": m.heights_mm,
                "genant_grade": m.genant_grade,
                "flags": list(m.flags),
                "trabecular_hu_p5": m.trabecular_hu_p5,
                "trabecular_hu_p25": m.trabecular_hu_p25,
                "trabecular_hu_p75": m.trabecular_hu_p75,
                "trabecular_hu_p95": m.trabecular_hu_p95,
                "roi": m.roi,
                "roi_volume_ml": m.roi_volume_ml,
                "roi_ends_weighted": "+".join(m.roi_ends_weighted) or None,
                "dense_focus_ml": m.dense_focus_ml,
                "endplate_excluded_ml": m.endplate_excluded_ml,
                "height_loss": m.height_loss,
                "body_split": m.split_method,
                "centroid_lps_mm": m.centroid_lps_mm,
                "segmentation_confidence": m.segmentation_confidence,
            }
        )
    by_level = result.by_level()
    l1 = by_level.get("L1")
    found = [m.level for m in result.levels if "empty_mask" not in m.flags]
    cal = calibrated.calibration if calibrated else None
    calibration: dict = {"method": "none"}
    if calibrated is not None and cal is not None:
        calibration = cal.model_dump(mode="json", exclude={"schema_version"})
        calibration["hu_correction"] = calibrated.hu_correction
    summary = {"l1_hu": l1.trabecular_hu_mean if l1 else None}
    if calibrated is not None:
        summary = calibrated.summary
    info = _input_info(volume, scan_path)
    if calibrated is not None and calibrated.contrast_phase:
        info["contrast_phase"] = calibrated.contrast_phase
    warnings = list(volume.metadata.get("warnings", [])) + list(result.warnings)
    warnings += [f"segmentation: {f}" for f in labels.metadata.get("flags", []) if is_warning(f)]
    naming = labels.metadata.get("naming") or {}
    if naming.get("confidence") is not None and naming["confidence"] < 0.5 and "provisional" not in naming.get("method", ""):
        warnings.append(f"segmentation: level names uncertain (naming confidence {naming['confidence']:.2f})")
    for m in result.levels:
        doubts = [f.split(":", 1)[1] for f in m.flags if f.startswith("implausible:")]
        if doubts:
            warnings.append(f"{m.level}: implausible ({'; '.join(doubts)}): kept out of the classification; review its mask")
        unsure = [f.split(":", 1)[1] for f in m.flags if f.startswith("uncertain:")]
        if unsure:
            warnings.append(f"{m.level}: uncertain {'; '.join(unsure)}: review its mask")
    if calibrated is not None:
        warnings += [w for w in calibrated.warnings if w not in warnings]
    return Report.model_validate(
        {
            "volbmd_version": __version__,
            "config_sha256": config_sha256,
            "input": info,
            "segmentation": {
                "backend": backend,
                "levels_found": found,
                "flags": list(labels.metadata.get("flags", [])),
                **({"naming": naming} if naming else {}),
            },
            "measurement": {
                "roi": result.roi,
                "cortical_depth_mm": result.cortical_depth_mm,
                "cortical_depth_rule": result.cortical_depth_rule,
            },
            "calibration": calibration,
            "vertebrae": vertebrae,
            "summary": summary,
            "qa": {"warnings": warnings},
            "timings_s": timings_s or {},
        }
    )


STAGES = ("load", "segment", "measure", "calibrate_classify", "report")


@dataclass
class Artifacts:
    """What a run produced besides numbers: the scan and masks (canonical frame) and the inverse."""

    volume: Volume
    labels: LabelMap
    result: MeasurementResult
    config: PipelineConfig


ACQUISITION_KEYS = {"kvp": "kVp", "contrast_phase": "contrast phase"}


def _with_acquisition(volume: Volume, acquisition: dict) -> Volume:
    """The volume with acquisition facts given by the user; a fact that contradicts the file's own
    is used, and said in the warnings."""
    unknown = set(acquisition) - set(ACQUISITION_KEYS)
    if unknown:
        raise ConfigError(f"unknown acquisition facts {sorted(unknown)}; known: {', '.join(ACQUISITION_KEYS)}")
    meta = dict(volume.metadata)
    warnings = list(meta.get("warnings", []))
    for key, value in acquisition.items():
        if value is None:
            continue
        if meta.get(key) not in (None, value):
            warnings.append(f"{ACQUISITION_KEYS[key]} given as {value} although the file says {meta[key]}: {value} used")
        meta[key] = value
    meta["warnings"] = warnings
    return dataclasses.replace(volume, metadata=meta)


def _import_analysis() -> None:
    """Import the measurement and calibration (scipy, numba: about 0.3 s) and start numba's
    compiler (about 0.3 s more). Run on a thread while the scan is read, which releases the GIL,
    the cost is hidden behind the read."""
    import volbmd.calibrate.internal  # noqa: F401
    import volbmd.measure  # noqa: F401
    from volbmd_kernels import load_jit

    load_jit()


def analyze(
    scan_or_volume,
    config: PipelineConfig | str | os.PathLike | None = None,
    *,
    segmenter=None,
    masks=None,
    model=None,
    calibration=None,
    levels: list[str] | None = None,
    series_uid: str | None = None,
    progress=None,
    acquisition: dict | None = None,
    bmd_model=None,
    **overrides,
) -> Report:
    """Scan → vertebrae → trabecular BMD → classification, as a :class:`~volbmd.report.Report`.

    Args:
        scan_or_volume: a path volbmd reads, or a :class:`~volbmd.volume.Volume`.
        config: a PipelineConfig, a YAML file, or None for the shipped defaults.
        segmenter: a Segmenter object (built once, reused across scans); else built from the config
            (``masks``/``model`` for those backends).
        calibration: calibration.json path or Calibration; None → internal calibration if possible.
        progress: callable ``progress(stage, seconds)`` called after each stage.
        acquisition: facts of the acquisition the file does not hold (NIfTI keeps no kVp):
            ``{"kvp": 120, "contrast_phase": "portal_venous"}``; they take the place of the file's own.
        bmd_model: a model folder from ``volbmd train bmd`` (or a loaded BmdRegressor): each level
            also gets the network's BMD and SD, and a flag where it disagrees with the calibrated one.
        **overrides: config sections to change, e.g. ``measurement={"roi": "mid_slab_ellipse"}``.
    Example:
        >>> report = volbmd.analyze("ct.nii.gz")            # doctest: +SKIP
        >>> report.summary.acr_category                     # doctest: +SKIP
    """
    from volbmd.segment.base import make_segmenter

    if isinstance(config, PipelineConfig):
        cfg = config if not overrides else load_config(None, merge_settings(config.model_dump(), overrides))
    else:
        cfg = load_config(config, overrides or None)
    if segmenter is None:
        backend = "masks" if masks is not None and cfg.segmentation.backend == "classical" else cfg.segmentation.backend
        segmenter = make_segmenter(
            backend,
            masks=masks,
            label_scheme=cfg.segmentation.label_scheme,
            model=model,
            classical=cfg.segmentation.classical,
        )
    if levels:
        from volbmd.labels import is_level

        unknown = [lvl for lvl in levels if not is_level(lvl)]
        if unknown:
            raise ConfigError(f"unknown level names {unknown} in --levels")
    timings: dict[str, float] = {}

    def stage(name, t0):
        timings[name] = time.perf_counter() - t0
        if progress is not None:
            progress(name, timings[name])

    t = time.perf_counter()
    with ThreadPoolExecutor(max_workers=1) as pool:  # the analysis is imported while the scan is read
        imported = pool.submit(_import_analysis)
        volume = scan_or_volume if isinstance(scan_or_volume, Volume) else load_volume(scan_or_volume, series_uid=series_uid)
        imported.result()
    from volbmd.calibrate.choose import uses_internal_calibration
    from volbmd.calibrate.internal import find_reference_tissues
    from volbmd.measure import measure_vertebrae

    if acquisition:
        volume = _with_acquisition(volume, acquisition)
    stage("load", t)
    t = time.perf_counter()
    labels = segmenter.segment(volume)
    stage("segment", t)
    if calibration is not None and not hasattr(calibration, "method"):
        from volbmd.calibrate.base import load_calibration

        calibration = load_calibration(calibration)
    t = time.perf_counter()
    with ThreadPoolExecutor(max_workers=1) as pool:  # the reference tissues are found while the vertebrae are measured
        tissues = (
            pool.submit(find_reference_tissues, volume, labels)
            if uses_internal_calibration(volume, cfg, calibration)
            else None
        )
        result = measure_vertebrae(volume, labels, cfg, levels=levels, keep_masks=True)
        stage("measure", t)
        t = time.perf_counter()
        masks_given = bool(getattr(segmenter, "masks_given", False))
        calibrated = calibrate_and_classify(
            volume,
            labels,
            result,
            cfg,
            calibration,
            masks_given=masks_given,
            tissues=None if tissues is None else tissues.result(),
        )
    stage("calibrate_classify", t)
    if cfg.uncertainty.repeat_draws and not masks_given:
        from volbmd.repeatability import apply_repeat_draws, repeat_draws

        t = time.perf_counter()

        def once(noisy: Volume):
            noisy_labels = segmenter.segment(noisy)
            noisy_result = measure_vertebrae(noisy, noisy_labels, cfg, levels=levels)
            again = calibrate_and_classify(noisy, noisy_labels, noisy_result, cfg, calibration)
            return again.bmd_by_level, again.summary.get("bmd_mg_cm3_mean")

        draws = repeat_draws(
            volume, once, calibrated.calibration, n_draws=cfg.uncertainty.repeat_draws, seed=cfg.uncertainty.repeat_seed
        )
        apply_repeat_draws(calibrated, result, draws, cfg)
        stage("repeat_draws", t)
    scan_path = None if isinstance(scan_or_volume, Volume) else str(scan_or_volume)
    report = build_report(
        volume,
        labels,
        result,
        backend=segmenter.name,
        scan_path=scan_path,
        timings_s=timings,
        calibrated=calibrated,
        config_sha256=config_sha256(cfg),
    )
    if bmd_model is not None:
        from volbmd.models.bmd_regressor import add_dl_estimates

        t = time.perf_counter()
        add_dl_estimates(report, volume, labels, bmd_model)
        stage("bmd_model", t)
        report.timings_s["bmd_model"] = timings["bmd_model"]
    return report.with_artifacts(Artifacts(volume, labels, result, cfg))


def write_outputs(
    report: Report, out_dir: str | os.PathLike, *, progress=None, also=None, dicom_study: DicomStudy | None = None
) -> dict[str, Path]:
    """Write every output of an analysed report into ``out_dir`` (each file atomically); returns
    the files written by name. ``report`` itself is not changed (report.json holds the report stage's
    time, the list of outputs and any DICOM warnings besides).

    report.json, vertebrae.csv, labels.nii.gz, bodies.nii.gz, rois.nii.gz (VerSe ids, the scan's own
    grid), qa.png, report.html, and for DICOM inputs (or with ``dicom_study``) dicom_seg.dcm, dicom_sr.dcm
    and dicom_sc.dcm.

    Everything is written into a fresh folder beside ``out_dir`` that replaces it whole at the end
    (see :mod:`volbmd.io.output_folder`): a failed run leaves ``out_dir`` as it was, and a rerun
    leaves no file of an earlier scan. ``also(folder)``, when given, writes further files into the
    new folder before it is swapped in.

    ``dicom_study``: for a scan read from a non-DICOM file, the study it belongs to; the DICOM
    results are then written too, referencing a derived CT series of the scan (dicom_ct/) in that
    study. Refused for a DICOM series (it names its own study).
    """
    return _write_outputs(report, out_dir, progress=progress, also=also, dicom_study=dicom_study)[0]


def _write_outputs(
    report: Report, out_dir, *, progress=None, also=None, dicom_study: DicomStudy | None = None
) -> tuple[dict[str, Path], Report]:
    """:func:`write_outputs`, also returning the report as written: a copy of ``report`` (which is
    left as it was) with the report stage's time, the list of outputs and any DICOM warnings."""
    from volbmd.io.output_folder import fresh_output_folder

    art = report.artifacts
    if art is None:
        raise ValueError("write_outputs needs a report from analyze() (it holds the masks)")
    if dicom_study is not None and art.volume.source_files:
        raise InputError(
            "study identifiers are for scans read from NIfTI, NRRD, MHA or Zarr files: a DICOM series names its own study",
            art.volume.source,
        )
    t = time.perf_counter()
    written = Report.model_validate(report.model_dump()).with_artifacts(art)
    out_dir = Path(out_dir)
    with fresh_output_folder(out_dir) as folder:
        names = _write_outputs_into(written, art, folder, out_dir.absolute(), t, dicom_study)
        if also is not None:
            also(folder)
    if progress is not None:
        progress("report", written.timings_s["report"])
    return {name: out_dir / name for name in names}, written


def _write_outputs_into(
    report: Report, art: Artifacts, out_dir: Path, final_dir: Path, t: float, dicom_study: DicomStudy | None
) -> list[str]:
    import yaml

    from volbmd import __version__
    from volbmd.config import load_threshold_set
    from volbmd.geometry import canonicalize, uncanonicalize
    from volbmd.io import atomic_output
    from volbmd.report.figures import render_qa_png
    from volbmd.report.html import render_html

    volume, labels, result = art.volume, art.labels, art.result
    canon, reo = canonicalize(volume, copy=False)
    canon_labels, _ = canonicalize(labels, copy=False)
    bodies_c, rois_c = result.mask_volumes(
        canon.shape, dtype=np.uint8 if max(labels.labels.values(), default=0) < 256 else np.int16
    )
    bodies = LabelMap.on_grid_of(canon, bodies_c, labels.labels, source="bodies")
    rois = LabelMap.on_grid_of(canon, rois_c, labels.labels, source="rois")
    paths = {}
    thresholds = load_threshold_set(art.config.classification.threshold_set)
    # the label maps are compressed and written by ITK (which releases the GIL) while matplotlib
    # draws the QA picture
    with ThreadPoolExecutor(max_workers=1) as pool:
        written = pool.submit(
            lambda: {
                "labels.nii.gz": write_labels(labels, out_dir / "labels.nii.gz", source=volume),
                "bodies.nii.gz": write_labels(uncanonicalize(bodies, reo), out_dir / "bodies.nii.gz", source=volume),
                "rois.nii.gz": write_labels(uncanonicalize(rois, reo), out_dir / "rois.nii.gz", source=volume),
            }
        )
        png = render_qa_png(canon, canon_labels, bodies, rois, report, thresholds, masks=result.masks)
        paths.update(written.result())
    with atomic_output(out_dir / "qa.png") as tmp:
        tmp.write_bytes(png)
    paths["qa.png"] = out_dir / "qa.png"
    files = list(volume.source_files)
    if dicom_study is not None:  # a non-DICOM scan in a study the user named: a derived series to reference
        from volbmd.report.dicom_ct import DERIVED_CT_FOLDER, write_derived_ct_series

        files = [
            str(f)
            for f in write_derived_ct_series(
                volume, dicom_study, out_dir / DERIVED_CT_FOLDER, version=__version__, kvp=report.input.kvp
            )
        ]
        paths[DERIVED_CT_FOLDER] = out_dir / DERIVED_CT_FOLDER
    if files:  # SEG, SR and secondary capture in the source study; the other outputs stand without them
        from volbmd.report.dicom_outputs import write_dicom_outputs

        written_dicom, dicom_warnings = write_dicom_outputs(report, labels, files, png, out_dir, version=__version__)
        paths.update(written_dicom)
        report.qa.warnings.extend(dicom_warnings)
    report.timings_s["report"] = time.perf_counter() - t
    with atomic_output(out_dir / "config.yaml") as tmp:  # the resolved settings: the run can be repeated
        tmp.write_text(
            "# volbmd " + __version__ + ": the resolved configuration of this run (volbmd run --config "
            "config.yaml repeats it)\n" + yaml.safe_dump(art.config.model_dump(mode="json"), sort_keys=False)
        )
    paths["config.yaml"] = out_dir / "config.yaml"
    report.outputs = sorted(list(paths) + ["report.json", "vertebrae.csv", "report.html"])
    with atomic_output(out_dir / "report.html") as tmp:
        tmp.write_text(render_html(report, png))
    paths["report.html"] = out_dir / "report.html"
    paths.update(write_report(report, out_dir))
    _write_run_pointer(report, out_dir, final_dir)
    return list(paths)


def _write_run_pointer(report: Report, out_dir: Path, final_dir: Path) -> None:
    """Where the scan of a run lives, for `volbmd review` (kept out of the reports on purpose): a
    path relative to the result folder, never an absolute one (folder names often carry patient
    names)."""
    import json

    from volbmd.io import atomic_output
    from volbmd.io.output_folder import RUN_MARKER

    source = report.artifacts.volume.source
    scan = None
    if source and Path(source).exists():
        scan = os.path.relpath(Path(source).resolve(), final_dir.resolve())
    with atomic_output(out_dir / RUN_MARKER) as tmp:
        tmp.write_text(json.dumps({"scan": scan, "series_uid": report.artifacts.volume.metadata.get("series_uid")}))


def run_pipeline(
    scan,
    out_dir,
    *,
    segmenter=None,
    config: PipelineConfig | None = None,
    progress=None,
    dicom_study: DicomStudy | None = None,
    **kwargs,
) -> Report:
    """:func:`analyze` then :func:`write_outputs`; returns the report as written (with its outputs)."""
    report = analyze(scan, config, segmenter=segmenter, progress=progress, **kwargs)
    return _write_outputs(report, out_dir, progress=progress, dicom_study=dicom_study)[1]

"""Orchestration only: scan → labels → measurement → report."""

from __future__ import annotations

import os
import time
from pathlib import Path

from volbmd.config import PipelineConfig, load_config
from volbmd.errors import ConfigError
from volbmd.io import load_volume, write_labels
from volbmd.measure import MeasurementResult, measure_vertebrae
from volbmd.report import Report, write_report
from volbmd.volume import LabelMap, Volume

__all__ = ["build_report", "run_masks_pipeline"]


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


def build_report(volume: Volume, labels: LabelMap, result: MeasurementResult, *, backend: str,
                 scan_path: str | None = None, timings_s: dict | None = None) -> Report:
    from volbmd import __version__

    vertebrae = []
    for m in result.levels:
        vertebrae.append({
            "level": m.level,
            "body_volume_ml": m.body_volume_ml,
            "trabecular_hu_mean": m.trabecular_hu_mean,
            "trabecular_hu_median": m.trabecular_hu_median,
            "trabecular_hu_sd": m.trabecular_hu_sd,
            "trabecular_n_voxels": m.trabecular_n_voxels,
            "bmd_mg_cm3": None,
            "heights_mm": m.heights_mm,
            "genant_grade": m.genant_grade,
            "flags": list(m.flags),
            "trabecular_hu_p5": m.trabecular_hu_p5,
            "trabecular_hu_p25": m.trabecular_hu_p25,
            "trabecular_hu_p75": m.trabecular_hu_p75,
            "trabecular_hu_p95": m.trabecular_hu_p95,
            "roi": m.roi,
            "roi_volume_ml": m.roi_volume_ml,
            "height_loss": m.height_loss,
            "body_split": m.split_method,
            "centroid_lps_mm": m.centroid_lps_mm,
        })
    by_level = result.by_level()
    l1 = by_level.get("L1")
    found = [m.level for m in result.levels if "empty_mask" not in m.flags]
    return Report.model_validate({
        "volbmd_version": __version__,
        "input": _input_info(volume, scan_path),
        "segmentation": {"backend": backend, "levels_found": found},
        "measurement": {
            "roi": result.roi,
            "cortical_depth_mm": result.cortical_depth_mm,
            "cortical_depth_rule": result.cortical_depth_rule,
        },
        "calibration": {"method": "none"},
        "vertebrae": vertebrae,
        "summary": {"l1_hu": l1.trabecular_hu_mean if l1 else None},
        "qa": {"warnings": list(volume.metadata.get("warnings", [])) + list(result.warnings)},
        "timings_s": timings_s or {},
    })


def run_masks_pipeline(
    scan: str | os.PathLike,
    masks: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    config: PipelineConfig | None = None,
    levels: list[str] | None = None,
    series_uid: str | None = None,
) -> Report:
    """Measure a scan with imported vertebra masks and write report.json, vertebrae.csv, labels.nii.gz."""
    from volbmd.segment.masks import load_masks

    config = config or load_config()
    timings: dict[str, float] = {}
    t = time.perf_counter()
    volume = load_volume(scan, series_uid=series_uid)
    timings["load"] = time.perf_counter() - t
    t = time.perf_counter()
    labels = load_masks(masks, volume, label_scheme=config.segmentation.label_scheme)
    timings["segment"] = time.perf_counter() - t
    if levels:
        from volbmd.labels import is_level

        unknown = [lvl for lvl in levels if not is_level(lvl)]
        if unknown:
            raise ConfigError(f"unknown level names {unknown} in --levels")
    t = time.perf_counter()
    result = measure_vertebrae(volume, labels, config, levels=levels)
    timings["measure"] = time.perf_counter() - t
    report = build_report(volume, labels, result, backend="masks", scan_path=str(scan), timings_s=timings)
    out_dir = Path(out_dir)
    write_labels(labels, out_dir / "labels.nii.gz", source=volume)
    write_report(report, out_dir)
    return report

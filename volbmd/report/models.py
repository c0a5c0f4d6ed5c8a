"""The report contract (report.json, vertebrae.csv): pydantic models and atomic writers.

Keys follow shared/ARCHITECTURE.md; change them only with a SCHEMA_VERSION bump.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path
from typing import Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    model_serializer,
)

from volbmd.io import atomic_output

__all__ = ["SCHEMA_VERSION", "Report", "VertebraRecord", "write_report", "CSV_COLUMNS"]

SCHEMA_VERSION = "1.1"  # 1.1: config_sha256 added


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")
    #: optional keys left out of report.json while they are None (they appear only when they apply)
    _absent_when_none: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _leave_out_absent(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
        data = handler(self)
        for key in self._absent_when_none:
            if isinstance(data, dict) and data.get(key, 0) is None:
                del data[key]
        return data


class InputInfo(_Open):
    path: str = Field(description="the scan's file or folder name only (full paths often carry patient names)")
    modality: str | None = None
    shape: list[int] = Field(description="voxels (z, y, x) as read")
    spacing_mm: list[float] = Field(description="voxel size (z, y, x) in mm")
    kvp: float | None = Field(None, description="tube voltage, from the file or given (--kvp)")
    contrast_phase: str | None = Field(
        None, description="native, portal_venous, arterial or 'contrast (…)'; None: not known"
    )
    slice_thickness_mm: float | None = None
    convolution_kernel: str | None = None
    manufacturer: str | None = None


class SegmentationInfo(_Open):
    _absent_when_none = ("naming",)
    backend: str
    levels_found: list[str]
    flags: list[str] = Field([], description="codes declared in volbmd/flags.py, each with its detail")
    naming: dict[str, Any] | None = Field(
        None,
        description="how the levels were named (classical backend): method, "
        "anatomy, confidence, landmarks, agrees, disagrees, runner_up",
    )


class CalibrationInfo(_Open):
    """The calibration used (calibrate/base.py ``Calibration`` as written), with the contrast correction."""

    method: str = "none"
    material: str | None = None
    slope: float | None = Field(None, description="mg/cm³ per HU")
    intercept: float | None = Field(None, description="mg/cm³")
    r2: float | None = None
    phantom: str | None = None
    model: str | None = None
    rods: list[dict[str, Any]] = []
    reference_tissues: dict[str, dict[str, Any]] = {}
    scanner: dict[str, Any] = {}
    warnings: list[str] = []
    details: dict[str, float] = {}
    slope_intercept_cov: list[list[float]] | None = Field(None, description="statistical covariance of (slope, intercept)")
    hu_correction: float | None = Field(None, description="HU subtracted before calibration (contrast correction)")


class Heights(_Open):
    anterior: float | None = None
    middle: float | None = None
    posterior: float | None = None


class VertebraRecord(_Open):
    level: str
    body_volume_ml: float | None = None
    trabecular_hu_mean: float | None = None
    trabecular_hu_median: float | None = None
    trabecular_hu_sd: float | None = None
    trabecular_n_voxels: int = 0
    bmd_mg_cm3: float | None = None
    heights_mm: Heights = Heights()
    genant_grade: int | None = None
    flags: list[str] = []
    bmd_sd_mg_cm3: float | None = Field(None, description="SD of bmd_mg_cm3 for a repeat scan (terms, or repeat draws)")
    trabecular_hu_p5: float | None = None
    trabecular_hu_p25: float | None = None
    trabecular_hu_p75: float | None = None
    trabecular_hu_p95: float | None = None
    roi: str | None = Field(None, description="trabecular ROI kind: eroded_body or mid_slab_ellipse")
    roi_volume_ml: float | None = None
    roi_ends_weighted: str | None = Field(
        None,
        description="ends of the ROI whose slabs counted less in the mean, as endplate or disc "
        "the body mask took in: inferior, superior or inferior+superior (absent: none)",
    )
    dense_focus_ml: float | None = Field(
        None,
        description="focal dense bone (a bone island, a sclerotic focus) left out of the ROI, ml (absent: none)",
    )
    endplate_excluded_ml: float | None = Field(
        None,
        description="a cupped endplate reaching into the body's middle and the disc tissue in its cup, "
        "left out of the ROI, ml (absent: none)",
    )
    height_loss: float | None = Field(None, description="largest height loss against the reference height (0–1)")
    body_split: str | None = Field(None, description="how the body was split from the arch: split, body_only, too_thin")
    centroid_lps_mm: list[float] | None = Field(None, description="body centroid, LPS world mm")
    segmentation_confidence: float | None = None
    bmd_dl_mg_cm3: float | None = Field(
        None, description="BMD from the deep-learning regressor (--bmd-model), beside bmd_mg_cm3"
    )
    bmd_dl_sd_mg_cm3: float | None = Field(None, description="the regressor's stated SD (fold spread and out-of-fold RMSE)")


class RepeatDrawsInfo(_Open):
    n_draws: int
    noise_hu: float | None = Field(None, description="SD of the noise added to each copy (the scan's own)")
    summary_missing: int = Field(0, description="draws on which the summary could not be formed")


class Summary(_Open):
    _absent_when_none = ("repeat_draws",)
    bmd_mg_cm3_mean: float | None = None
    levels_used: list[str] = []
    acr_category: str | None = None
    l1_hu: float | None = None
    l1_screen: str | None = None
    material: str | None = Field(None, description="material of bmd_mg_cm3_mean: that of the threshold set")
    threshold_set: str | None = None
    classification_notes: list[str] = []
    bmd_sd_mg_cm3: float | None = None
    borderline: bool = Field(False, description="the category would change within one SD")
    l1_hu_normalised_to_120kvp: bool = False
    max_genant_grade: int | None = None
    fractured_levels: list[str] = []
    repeat_draws: RepeatDrawsInfo | None = Field(None, description="present when the SDs were measured by repeat draws")


class QA(_Open):
    warnings: list[str] = []


class MeasurementInfo(_Open):
    roi: str | None = None
    cortical_depth_mm: float | None = None
    cortical_depth_rule: str | None = None


class Report(_Open):
    """The report contract. ``artifacts`` (not serialised) holds the volume and masks of a run."""

    _artifacts: Any = PrivateAttr(default=None)
    _absent_when_none = ("measurement", "outputs")
    schema_version: str = SCHEMA_VERSION
    volbmd_version: str
    config_sha256: str | None = Field(
        None,
        description="SHA-256 of the run's resolved configuration (the "
        "config.yaml written beside report.json); equal settings, equal hash",
    )
    input: InputInfo
    segmentation: SegmentationInfo
    calibration: CalibrationInfo = CalibrationInfo()
    vertebrae: list[VertebraRecord]
    summary: Summary = Summary()
    qa: QA = QA()
    measurement: MeasurementInfo | None = None
    timings_s: dict[str, float] = Field({}, description="seconds per stage")
    outputs: list[str] | None = Field(None, description="files of the run folder (set when written)")

    @property
    def artifacts(self):
        """The run's volume, labels, measurement and config (``pipeline.Artifacts``), or None for a
        report read back from report.json."""
        return self._artifacts

    def with_artifacts(self, artifacts) -> Report:
        """This report, holding ``artifacts`` (set once by ``pipeline.analyze``)."""
        self._artifacts = artifacts
        return self


CSV_COLUMNS = [
    "level",
    "body_volume_ml",
    "trabecular_hu_mean",
    "trabecular_hu_median",
    "trabecular_hu_sd",
    "trabecular_n_voxels",
    "bmd_mg_cm3",
    "height_anterior_mm",
    "height_middle_mm",
    "height_posterior_mm",
    "genant_grade",
    "flags",
]


def _natural_key(name: str) -> list:
    """ "trabecular_hu_p5" before "trabecular_hu_p25": numbers compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _is_scalar(annotation) -> bool:
    import types
    import typing

    args = (
        typing.get_args(annotation)
        if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union
        else (annotation,)
    )
    return all(a in (int, float, str, bool, type(None)) for a in args)


def csv_extra_columns() -> list[str]:
    """The per-vertebra keys of the contract beyond CSV_COLUMNS that are single values (so one CSV
    cell each), in natural order: derived from ``VertebraRecord``, never listed by hand."""
    covered = set(CSV_COLUMNS) | {"heights_mm"}  # the three height_*_mm columns come from heights_mm
    return sorted(
        (name for name, f in VertebraRecord.model_fields.items() if name not in covered and _is_scalar(f.annotation)),
        key=_natural_key,
    )


def _csv_text(report: Report) -> str:
    extra = csv_extra_columns()
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS + extra)
    for v in report.vertebrae:
        row: list[Any] = [
            v.level,
            v.body_volume_ml,
            v.trabecular_hu_mean,
            v.trabecular_hu_median,
            v.trabecular_hu_sd,
            v.trabecular_n_voxels,
            v.bmd_mg_cm3,
            v.heights_mm.anterior,
            v.heights_mm.middle,
            v.heights_mm.posterior,
            v.genant_grade,
            ";".join(v.flags),
        ]
        row += [getattr(v, k) for k in extra]
        writer.writerow(["" if x is None else (f"{x:.6g}" if isinstance(x, float) else x) for x in row])
    return buf.getvalue()


def write_report(report: Report, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write report.json and vertebrae.csv into ``out_dir`` (each atomically)."""
    out_dir = Path(out_dir)
    paths = {"report.json": out_dir / "report.json", "vertebrae.csv": out_dir / "vertebrae.csv"}
    with atomic_output(paths["report.json"]) as tmp:
        tmp.write_text(json.dumps(report.model_dump(mode="json"), indent=2) + "\n")
    with atomic_output(paths["vertebrae.csv"]) as tmp:
        tmp.write_text(_csv_text(report))
    return paths

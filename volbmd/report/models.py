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
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from volbmd.io import atomic_output

__all__ = ["SCHEMA_VERSION", "Report", "VertebraRecord", "write_report", "CSV_COLUMNS"]

SCHEMA_VERSION = "1.1"  # 1.1: config_sha256 added


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class InputInfo(_Open):
    path: str
    modality: str | None = None
    shape: list[int]
    spacing_mm: list[float]
    kvp: float | None = None
    contrast_phase: str | None = None
    slice_thickness_mm: float | None = None


class SegmentationInfo(_Open):
    backend: str
    levels_found: list[str]


class CalibrationInfo(_Open):
    method: str = "none"
    material: str | None = None
    slope: float | None = None
    intercept: float | None = None
    r2: float | None = None


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


class Summary(_Open):
    bmd_mg_cm3_mean: float | None = None
    levels_used: list[str] = []
    acr_category: str | None = None
    l1_hu: float | None = None
    l1_screen: str | None = None


class QA(_Open):
    warnings: list[str] = []


class Report(_Open):
    """The report contract. ``artifacts`` (not serialised) holds the volume and masks of a run."""

    _artifacts: Any = PrivateAttr(default=None)
    schema_version: str = SCHEMA_VERSION
    volbmd_version: str
    config_sha256: str | None = Field(None, description="SHA-256 of the run's resolved configuration (the "
                                      "config.yaml written beside report.json); equal settings, equal hash")
    input: InputInfo
    segmentation: SegmentationInfo
    calibration: CalibrationInfo = CalibrationInfo()
    vertebrae: list[VertebraRecord]
    summary: Summary = Summary()
    qa: QA = QA()

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
    "level", "body_volume_ml", "trabecular_hu_mean", "trabecular_hu_median", "trabecular_hu_sd",
    "trabecular_n_voxels", "bmd_mg_cm3", "height_anterior_mm", "height_middle_mm", "height_posterior_mm",
    "genant_grade", "flags",
]


def _natural_key(name: str) -> list:
    """"trabecular_hu_p5" before "trabecular_hu_p25": numbers compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _csv_text(report: Report) -> str:
    extra = sorted({k for v in report.vertebrae for k in (v.model_extra or {}) if not isinstance((v.model_extra or {})[k], (dict, list))},
                   key=_natural_key)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS + extra)
    for v in report.vertebrae:
        row: list[Any] = [
            v.level, v.body_volume_ml, v.trabecular_hu_mean, v.trabecular_hu_median, v.trabecular_hu_sd,
            v.trabecular_n_voxels, v.bmd_mg_cm3, v.heights_mm.anterior, v.heights_mm.middle, v.heights_mm.posterior,
            v.genant_grade, ";".join(v.flags),
        ]
        row += [(v.model_extra or {}).get(k) for k in extra]
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

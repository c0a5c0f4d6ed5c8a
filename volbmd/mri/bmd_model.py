"""PDFF → BMD: a straight line fitted to paired levels (marrow PDFF from MRI, QCT BMD of the same
level), with the uncertainty of a prediction from it. Published: r ≈ −0.64 to −0.66 between PDFF
and BMD in postmenopausal women, so an estimate carries a wide SD and is labelled a model estimate,
never a measurement.

Manifest (CSV): one row per level, columns ``pdff_percent`` and ``bmd_mg_cm3`` (others, e.g.
subject and level, are kept out of the model)."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from volbmd.errors import InputError

__all__ = ["PdffBmdModel", "fit_pdff_bmd", "read_pairs", "load_bmd_model"]

MODEL_KIND = "volbmd.pdff_to_bmd.linear"


class PdffBmdModel(BaseModel):
    """BMD = intercept + slope · PDFF, fitted by least squares."""

    kind: str = MODEL_KIND
    schema_version: str = "1.0"
    intercept_mg_cm3: float
    slope_mg_cm3_per_percent: float
    residual_sd_mg_cm3: float = Field(description="SD of the fit's residuals (n − 2 degrees of freedom)")
    n_levels: int
    pdff_mean_percent: float
    pdff_sxx: float = Field(description="Σ (PDFF − mean)², for the prediction interval")
    pdff_range_percent: tuple[float, float]
    pearson_r: float
    label: str = "model estimate from PDFF (not a measurement)"

    def predict(self, pdff_percent: float) -> tuple[float, float, bool]:
        """The BMD estimate, its SD as a prediction for a new level, and whether ``pdff_percent``
        lies outside the PDFF range the model was fitted on (an extrapolation)."""
        estimate = self.intercept_mg_cm3 + self.slope_mg_cm3_per_percent * pdff_percent
        leverage = 1.0 + 1.0 / self.n_levels + (pdff_percent - self.pdff_mean_percent) ** 2 / self.pdff_sxx
        low, high = self.pdff_range_percent
        return float(estimate), float(self.residual_sd_mg_cm3 * math.sqrt(leverage)), not (low <= pdff_percent <= high)


def read_pairs(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """The (PDFF %, BMD mg/cm³) pairs of a manifest; a bad row is an error naming its line."""
    path = Path(path)
    if not path.is_file():
        raise InputError("not found", path)
    pdff, bmd = [], []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in ("pdff_percent", "bmd_mg_cm3") if c not in columns]
        if missing:
            raise InputError(f"manifest lacks the column(s) {', '.join(missing)}", path)
        for n, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            try:
                x, y = float(row["pdff_percent"]), float(row["bmd_mg_cm3"])
            except ValueError:
                raise InputError(f"line {n}: pdff_percent and bmd_mg_cm3 must be numbers", path) from None
            if not (0.0 <= x <= 100.0) or not math.isfinite(y) or not (-100.0 < y < 1000.0):
                raise InputError(f"line {n}: PDFF {x} % or BMD {y} mg/cm³ out of range", path)
            pdff.append(x)
            bmd.append(y)
    return np.asarray(pdff), np.asarray(bmd)


def fit_pdff_bmd(pdff_percent: np.ndarray, bmd_mg_cm3: np.ndarray, *, source: str | None = None) -> PdffBmdModel:
    """Least-squares line through the pairs. Needs at least 5 levels spanning some PDFF."""
    x = np.asarray(pdff_percent, np.float64)
    y = np.asarray(bmd_mg_cm3, np.float64)
    if x.size < 5:
        raise InputError(f"{x.size} paired levels; at least 5 are needed to fit and judge a line", source)
    sxx = float(np.sum((x - x.mean()) ** 2))
    if sxx < 1e-6 * x.size:
        raise InputError("every level has the same PDFF: no slope can be fitted", source)
    slope = float(np.sum((x - x.mean()) * (y - y.mean())) / sxx)
    intercept = float(y.mean() - slope * x.mean())
    residuals = y - (intercept + slope * x)
    syy = float(np.sum((y - y.mean()) ** 2))
    return PdffBmdModel(
        intercept_mg_cm3=intercept,
        slope_mg_cm3_per_percent=slope,
        residual_sd_mg_cm3=float(np.sqrt(np.sum(residuals**2) / (x.size - 2))),
        n_levels=int(x.size),
        pdff_mean_percent=float(x.mean()),
        pdff_sxx=sxx,
        pdff_range_percent=(float(x.min()), float(x.max())),
        pearson_r=float(slope * math.sqrt(sxx / syy)) if syy > 0 else 0.0,
    )


def load_bmd_model(path: str | os.PathLike) -> PdffBmdModel:
    path = Path(path)
    try:
        content = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError("not found", path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"not a JSON file ({exc})", path) from None
    if not isinstance(content, dict) or content.get("kind") != MODEL_KIND:
        raise InputError(f"not a PDFF→BMD model from 'volbmd mri fit-bmd' (kind {MODEL_KIND!r})", path)
    if str(content.get("schema_version", "")).split(".")[0] != "1":
        raise InputError(f"unknown model schema version {content.get('schema_version')!r} (this volbmd reads 1.x)", path)
    try:
        return PdffBmdModel.model_validate(content)
    except Exception as exc:
        raise InputError(f"invalid model: {str(exc).splitlines()[0]}", path) from None

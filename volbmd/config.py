"""Validated configuration: pydantic models for the YAML files in configs/.

Errors name the file and the field: ``configs/x.yaml: measurement.roi: Input should be ...``.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from volbmd.errors import ConfigError
from volbmd.labels import LabelScheme
from volbmd.segment.base import BACKENDS
from volbmd.segment.classical.options import ClassicalOptions
from volbmd.yaml_models import StrictModel, format_validation, load_yaml_model, merge_settings

__all__ = [
    "LabelScheme",
    "SegmentationConfig",
    "MeasurementConfig",
    "PipelineConfig",
    "CalibrationConfig",
    "ClassificationConfig",
    "ThresholdSet",
    "load_threshold_set",
    "load_config",
    "config_sha256",
    "default_config",
    "load_yaml_model",
    "merge_settings",
]


_Strict = StrictModel


class SegmentationConfig(_Strict):
    backend: Literal[BACKENDS] = "classical"  # type: ignore[valid-type]  # the names in segment/base.py
    label_scheme: Literal["verse", "totalseg"] = "verse"
    classical: ClassicalOptions = ClassicalOptions()  # every option of the classical backend


class MeasurementConfig(_Strict):
    roi: Literal["eroded_body", "mid_slab_ellipse"] = "eroded_body"
    cortical_depth_mm: float | Literal["auto"] = "auto"
    min_body_volume_ml: float = Field(5.0, ge=0)
    min_roi_volume_ml: float = Field(0.5, ge=0)
    slab_thickness_mm: float = Field(9.0, gt=0)
    thick_slice_mm: float = Field(3.0, gt=0)
    genant_max_voxel_mm: float = Field(2.5, gt=0)
    plausible_trabecular_hu: tuple[float, float] = (-100.0, 450.0)
    end_guard_hu: float = Field(
        40.0,
        ge=0,
        description="the ROI ends before an end slab whose mean departs this far from the marrow's (0: off)",
    )
    dense_focus_hu: float = Field(
        350.0,
        ge=0,
        description="ROI voxels this far above the ROI's median (smoothed over 1 mm), and their neighbours, "
        "are focal dense bone (a bone island) and left out (0: off)",
    )
    endplate_plate_hu: float = Field(
        100.0,
        ge=0,
        description="ROI voxels this far above the ROI's median (smoothed over 1 mm) that reach from an end of the ROI "
        "into it are a cupped endplate; it and the cup's contents weigh less by how surely (0: off)",
    )

    @field_validator("cortical_depth_mm")
    @classmethod
    def _depth(cls, value):
        if value != "auto" and not (0 <= value <= 20):
            raise ValueError("cortical depth must be 0–20 mm or 'auto'")
        return value


class InternalCalibrationConfig(_Strict):
    enabled: bool = True
    nominal_hu: dict[Literal["air", "fat", "muscle", "blood"], float] = {
        "air": -1000.0,
        "fat": -100.0,
        "muscle": 50.0,
        "blood": 40.0,
    }
    ha_mg_cm3_per_hu: float = Field(0.8, gt=0)
    # how much each tissue's true HU varies between patients (weights of the calibration line)
    between_patient_sd_hu: dict[Literal["air", "fat", "muscle", "blood"], float] = {
        "air": 5.0,
        "fat": 10.0,
        "muscle": 10.0,
        "blood": 8.0,
    }
    blood_native_below_hu: float = 60.0  # blood counts fully below this aortic HU ...
    blood_contrast_above_hu: float = 90.0  # ... not at all above this (contrast), linearly between
    blood_full_length_mm: float = Field(40.0, gt=20.0)  # aorta found over this length counts fully


class KvpCorrectionConfig(_Strict):
    enabled: bool = True
    hu_change_vs_120: dict[int, float] = {80: 0.10, 100: 0.05, 120: 0.0, 140: -0.07}


class ContrastCorrectionConfig(_Strict):
    enabled: bool = False
    hu: dict[Literal["arterial", "portal_venous"], float] = {"arterial": 20.0, "portal_venous": 14.75}


class CalibrationConfig(_Strict):
    fail_1_minus_r2: float = Field(0.10, gt=0, le=1)
    warn_1_minus_r2: float = Field(0.02, gt=0, le=1)
    internal: InternalCalibrationConfig = InternalCalibrationConfig()
    kvp_correction: KvpCorrectionConfig = KvpCorrectionConfig()
    contrast_correction: ContrastCorrectionConfig = ContrastCorrectionConfig()
    k2hpo4_per_ha: dict[int, float] = {80: 0.86, 140: 0.81}


class L1ScreenConfig(_Strict):
    osteoporosis_likely_at_or_below: float = 110.0
    sensitive_at_or_below: float = 160.0
    unlikely_above: float = 200.0


class ClassificationConfig(_Strict):
    threshold_set: str = "acr"
    levels: list[str] = ["L1", "L2"]
    fallback_levels: list[str] = ["L3", "L4", "L5"]
    l1_screen_hu: L1ScreenConfig = L1ScreenConfig()

    @field_validator("levels", "fallback_levels")
    @classmethod
    def _levels(cls, value: list[str]) -> list[str]:
        from volbmd.labels import is_level

        bad = [v for v in value if not is_level(v)]
        if bad:
            raise ValueError(f"unknown level names {bad}")
        return value


class ThresholdSet(_Strict):
    name: str
    material: Literal["HA", "K2HPO4"] = "HA"
    normal_above_mg_cm3: float = Field(gt=0)
    osteoporosis_below_mg_cm3: float = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self):
        if not self.osteoporosis_below_mg_cm3 <= self.normal_above_mg_cm3:
            raise ValueError(
                f"osteoporosis_below_mg_cm3 ({self.osteoporosis_below_mg_cm3:g}) must not exceed "
                f"normal_above_mg_cm3 ({self.normal_above_mg_cm3:g})"
            )
        return self


class UncertaintyConfig(_Strict):
    """How bmd_sd_mg_cm3 is found: from terms (noise, calibration, boundary) by default, or by
    segmenting and measuring the scan again under fresh noise at its own level (``repeat_draws``)."""

    boundary_jitter_voxels: float = Field(
        0.25,
        ge=0,
        description="how far (voxels) a segmenter's ROI boundary moves "
        "between repeat scans, on average: scales the boundary term",
    )
    repeat_draws: int = Field(
        0,
        ge=0,
        le=20,
        description="segment and measure again on this many noisy copies "
        "(0: the SD from terms only; 3 or more to see segmentation changes)",
    )
    repeat_seed: int = Field(0, ge=0, description="seed of the noise draws (the same scan and seed, the same SD)")


class PipelineConfig(_Strict):
    segmentation: SegmentationConfig = SegmentationConfig()
    measurement: MeasurementConfig = MeasurementConfig()
    calibration: CalibrationConfig = CalibrationConfig()
    classification: ClassificationConfig = ClassificationConfig()
    uncertainty: UncertaintyConfig = UncertaintyConfig()


def default_config_path():
    return resources.files("volbmd_configs") / "pipeline" / "default.yaml"


def config_sha256(config: PipelineConfig) -> str:
    """SHA-256 of a resolved configuration (its JSON with sorted keys): equal for equal settings,
    whatever file or overrides they came from."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(config.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def default_config() -> PipelineConfig:
    return load_yaml_model(PipelineConfig, default_config_path())


def load_config(path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """The shipped defaults, updated by a user YAML file and then by ``overrides`` (nested dict)."""
    base = yaml.safe_load(default_config_path().read_text()) or {}
    if path is not None:
        user = load_yaml_model(PipelineConfig, path)  # validates the user's file on its own, naming it
        base = merge_settings(base, user.model_dump(exclude_unset=True))
    try:
        return PipelineConfig.model_validate(merge_settings(base, overrides or {}))
    except ValidationError as err:
        raise ConfigError(format_validation(err, path), path or "command-line options") from None


def load_threshold_set(name_or_path: str) -> ThresholdSet:
    """A shipped threshold set by name (configs/thresholds/<name>.yaml) or a user's YAML file."""
    candidate = resources.files("volbmd_configs") / "thresholds" / f"{name_or_path}.yaml"
    if candidate.is_file():
        return load_yaml_model(ThresholdSet, candidate)
    if Path(name_or_path).suffix in (".yaml", ".yml"):
        return load_yaml_model(ThresholdSet, Path(name_or_path))
    shipped = sorted(
        p.name[:-5] for p in (resources.files("volbmd_configs") / "thresholds").iterdir() if p.name.endswith(".yaml")
    )
    raise ConfigError(f"unknown threshold set '{name_or_path}'; shipped: {', '.join(shipped)}")

"""Reviewing a run: accept or reject levels, fix labels, recompute the edited levels, save.

Plain Python with no Qt, so the napari widgets stay thin and this is tested without a viewer.
A run folder holds report.json, labels.nii.gz and the pointer to its scan (.volbmd_run.json; the
demo keeps scan.nii.gz in the folder).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
from pathlib import Path

import numpy as np

from volbmd.calibrate.base import Calibration, hu_se_from_density_sd
from volbmd.errors import InputError
from volbmd.geometry import canonicalize, uncanonicalize
from volbmd.io import atomic_output, load_volume, write_labels
from volbmd.labels import LEVELS, level_rank, load_label_scheme
from volbmd.volume import LabelMap

__all__ = ["ReviewSession", "DECISIONS", "find_scan"]

DECISIONS = ("pending", "accepted", "rejected")


def find_scan(run_dir: Path) -> Path:
    pointer = run_dir / ".volbmd_run.json"
    if pointer.is_file():
        scan = json.loads(pointer.read_text()).get("scan")
        if scan and (run_dir / scan).exists():  # relative to the run folder (older runs: absolute)
            return run_dir / scan
    for name in ("scan.nii.gz", "scan.nii", "scan.nrrd", "scan.mha"):
        if (run_dir / name).exists():
            return run_dir / name
    raise InputError("the run's scan was not found (no .volbmd_run.json pointing to it, no scan.nii.gz)", run_dir)


class ReviewSession:
    """One run under review. Arrays are kept in the canonical frame (what the viewer shows)."""

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        report_path = self.run_dir / "report.json"
        if not report_path.is_file():
            raise InputError("not a volbmd run folder (no report.json)", self.run_dir)
        self.report = json.loads(report_path.read_text())
        self._run_summary = dict(self.report.get("summary", {}))
        verse = load_label_scheme("verse")
        self.scan_source = load_volume(find_scan(self.run_dir))
        labels_path = self.run_dir / "labels_reviewed.nii.gz"
        if not labels_path.exists():
            labels_path = self.run_dir / "labels.nii.gz"
        names = {v["level"]: verse[v["level"]] for v in self.report["vertebrae"] if v["level"] in verse}
        self.scan, self._reo = canonicalize(self.scan_source)
        self.labels = self._canonical_labels(labels_path, names, "labels")
        self._original = self.labels.array.copy()
        rois_path = self.run_dir / "rois.nii.gz"  # what each level's BMD was measured on
        self.rois = self._canonical_labels(rois_path, names, "ROIs").array if rois_path.is_file() else None
        previous = self._load_previous_review()
        self.decisions = {v["level"]: previous.get(v["level"], "pending") for v in self.report["vertebrae"]}
        self.edited: set[str] = set()
        self.started = _dt.datetime.now(_dt.UTC)

    def _canonical_labels(self, path: Path, names: dict[str, int], what: str) -> LabelMap:
        """A label file of the run (labels, ROIs) on the scan's grid, in the canonical frame."""
        raw = load_volume(path)
        if not raw.geometry.matches(self.scan_source.geometry):
            raise InputError(f"{what} and scan grids differ", path)
        canon, _ = canonicalize(LabelMap.on_grid_of(self.scan_source, raw.array.astype(np.int16), names))
        return canon

    def _load_previous_review(self) -> dict:
        path = self.run_dir / "review.json"
        return json.loads(path.read_text()).get("decisions", {}) if path.is_file() else {}

    # ------------------------------------------------------------------ what the table shows
    def rows(self) -> list[dict]:
        from volbmd.classify import acr_category
        from volbmd.config import load_threshold_set

        thresholds = load_threshold_set(self.report.get("summary", {}).get("threshold_set") or "acr")
        out = []
        for v in self.report["vertebrae"]:
            bmd = v.get("bmd_mg_cm3")
            out.append(
                {
                    "level": v["level"],
                    "hu": v.get("trabecular_hu_mean"),
                    "bmd": bmd,
                    "bmd_sd": v.get("bmd_sd_mg_cm3"),
                    "category": acr_category(bmd, thresholds) if bmd is not None else None,
                    "flags": list(v.get("flags", [])),
                    "decision": self.decisions.get(v["level"], "pending"),
                    "edited": v["level"] in self.edited,
                }
            )
        return out

    def level_centre(self, level: str) -> tuple[float, float, float] | None:
        """Canonical index (z, y, x) of a level's centre, for the viewer to jump to."""
        vid = self.labels.labels.get(level)
        if vid is None:
            return None
        idx = np.argwhere(self.labels.array == vid)
        if not idx.size:
            return None
        centre = idx.mean(axis=0)
        return float(centre[0]), float(centre[1]), float(centre[2])

    # ------------------------------------------------------------------ decisions and edits
    def set_decision(self, level: str, decision: str) -> None:
        if decision not in DECISIONS:
            raise ValueError(f"decision must be one of {DECISIONS}")
        if level not in self.decisions:
            raise KeyError(level)
        self.decisions[level] = decision

    def shift_levels(self, offset: int) -> None:
        """Rename every level by ``offset`` positions (+1: T12 → L1), e.g. when the count was off."""
        verse = load_label_scheme("verse")
        # the usual sequence: transitional T13/L6 are named by hand, not reached by shifting
        order = [lvl for lvl in LEVELS if lvl in verse and lvl not in ("T13", "L6")]
        mapping = {}
        for lvl in self.labels.labels:
            i = order.index(lvl) + offset
            if not 0 <= i < len(order):
                raise ValueError(f"cannot shift {lvl} by {offset}")
            mapping[lvl] = order[i]
        new = np.zeros_like(self.labels.array)
        for old, target in mapping.items():
            new[self.labels.array == verse[old]] = verse[target]
        self.labels = dataclasses.replace(
            self.labels, array=new, labels={mapping[k]: verse[mapping[k]] for k in self.labels.labels}
        )
        for v in self.report["vertebrae"]:
            v["level"] = mapping.get(v["level"], v["level"])
        self.report["vertebrae"].sort(key=lambda v: level_rank(v["level"]))
        self.decisions = {mapping.get(k, k): d for k, d in self.decisions.items()}
        self.edited = set(self.labels.labels)
        self._original = self.labels.array.copy()

    def update_labels(self, array: np.ndarray) -> set[str]:
        """Take the label array as edited in the viewer; returns the levels whose voxels changed."""
        if array.shape != self.labels.shape:
            raise ValueError("edited labels have a different shape")
        array = np.asarray(array, dtype=self.labels.array.dtype)
        changed_ids = set(np.unique(self._original[array != self._original]).tolist()) | set(
            np.unique(array[array != self._original]).tolist()
        )
        by_id = {vid: lvl for lvl, vid in self.labels.labels.items()}
        changed = {by_id[i] for i in changed_ids if i in by_id}
        self.labels = dataclasses.replace(self.labels, array=array.copy())
        self.edited |= changed
        return changed

    # ------------------------------------------------------------------ recompute and save
    def recompute(self) -> list[str]:
        """Measure the edited levels again (with the run's configuration and calibration) and redo
        the summary."""
        from volbmd.calibrate.uncertainty import roi_mean_se_hu
        from volbmd.classify import LevelResult, borderline_notes, classify
        from volbmd.config import load_config, load_threshold_set
        from volbmd.measure import measure_vertebrae

        run_config = self.run_dir / "config.yaml"  # the run's resolved settings (ROI, cortical depth, guards)
        config = load_config(run_config if run_config.is_file() else None)
        cal = self.report.get("calibration", {})
        calibration = (
            Calibration(**{k: cal[k] for k in Calibration.model_fields if k in cal})
            if cal.get("method") not in (None, "none")
            else None
        )
        levels = sorted(self.edited, key=level_rank)
        if levels:
            measured = measure_vertebrae(self.scan, self.labels, config, levels=levels, keep_masks=True)
            result = measured.by_level()
            if self.rois is not None:  # the edited levels' ROIs as now measured
                _, rois = measured.mask_volumes(self.rois.shape, self.rois.dtype)
                for level in levels:
                    vid = self.labels.labels[level]
                    self.rois[self.rois == vid] = 0
                    self.rois[rois == vid] = vid
            for v in self.report["vertebrae"]:
                m = result.get(v["level"])
                if m is None:
                    continue
                for key in (
                    "body_volume_ml",
                    "trabecular_hu_mean",
                    "trabecular_hu_median",
                    "trabecular_hu_sd",
                    "trabecular_n_voxels",
                    "roi_volume_ml",
                    "dense_focus_ml",
                    "endplate_excluded_ml",
                    "genant_grade",
                    "heights_mm",
                    "flags",
                ):
                    v[key] = getattr(m, key)
                if calibration is not None and m.trabecular_hu_mean is not None:
                    hu = m.trabecular_hu_mean - (cal.get("hu_correction") or 0.0)
                    v["bmd_mg_cm3"] = float(calibration.to_density(hu))
                    # the reviewer's mask is given: noise and calibration, no segmentation boundary term
                    v["bmd_sd_mg_cm3"] = calibration.density_sd(hu, roi_mean_se_hu(m, calibration, masks_given=True))
                else:
                    v["bmd_mg_cm3"] = v["bmd_sd_mg_cm3"] = None
        thresholds = load_threshold_set(self.report.get("summary", {}).get("threshold_set") or "acr")
        results = {}
        for v in self.report["vertebrae"]:
            flags = list(v.get("flags", [])) + (
                ["rejected_by_reviewer"] if self.decisions.get(v["level"]) == "rejected" else []
            )
            results[v["level"]] = LevelResult(v["level"], v.get("bmd_mg_cm3"), v.get("genant_grade"), flags)
        cls = classify(results, thresholds, config.classification)
        summary = self.report.setdefault("summary", {})
        if calibration is not None:
            run_summary = self._run_summary
            if set(cls.levels_used) == set(run_summary.get("levels_used") or []) and not self.edited & set(
                cls.levels_used
            ):  # the same levels as the run measured: its SD stands (measured, with --repeat-draws)
                sd = run_summary.get("bmd_sd_mg_cm3")
            else:
                sd = self._summary_sd(calibration, cls.levels_used)
            borderline = [] if cls.bmd_mg_cm3_mean is None else borderline_notes(cls.bmd_mg_cm3_mean, sd, thresholds)
            summary.update(
                {
                    "bmd_mg_cm3_mean": cls.bmd_mg_cm3_mean,
                    "levels_used": cls.levels_used,
                    "acr_category": cls.acr_category,
                    "classification_notes": cls.notes + borderline,
                    "bmd_sd_mg_cm3": sd,
                    "borderline": bool(borderline),
                }
            )
        summary.update({"max_genant_grade": cls.max_genant_grade, "fractured_levels": cls.fractured_levels})
        return levels

    def _summary_sd(self, calibration: Calibration, used: list[str]) -> float | None:
        """The summary's SD over ``used`` as the pipeline forms it (``classify.summary_density_sd``),
        each level's HU standard error read back from its stored SD."""
        from volbmd.classify import summary_density_sd

        by_level = {v["level"]: v for v in self.report["vertebrae"]}
        correction = self.report.get("calibration", {}).get("hu_correction") or 0.0
        hus, ses = [], []
        for level in used:
            v = by_level[level]
            if v.get("trabecular_hu_mean") is None or v.get("bmd_sd_mg_cm3") is None:
                return None
            hus.append(v["trabecular_hu_mean"] - correction)
            ses.append(hu_se_from_density_sd(calibration, hus[-1], v["bmd_sd_mg_cm3"]))
        return summary_density_sd(calibration, hus, ses) if hus else None

    def save(self, reviewer: str | None = None) -> dict[str, Path]:
        """Write labels_reviewed.nii.gz (scan grid), review.json and the updated report.json."""
        labels_src = uncanonicalize(self.labels, self._reo)
        paths = {
            "labels_reviewed.nii.gz": write_labels(
                labels_src, self.run_dir / "labels_reviewed.nii.gz", source=self.scan_source
            )
        }
        record = {
            "decisions": self.decisions,
            "edited_levels": sorted(self.edited, key=level_rank),
            "started": self.started.isoformat(timespec="seconds"),
            "saved": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "reviewer": reviewer,
        }
        with atomic_output(self.run_dir / "review.json") as tmp:
            tmp.write_text(json.dumps(record, indent=2) + "\n")
        paths["review.json"] = self.run_dir / "review.json"
        self.report["review"] = record
        for v in self.report["vertebrae"]:
            v["review_decision"] = self.decisions.get(v["level"], "pending")
        with atomic_output(self.run_dir / "report.json") as tmp:
            tmp.write_text(json.dumps(self.report, indent=2) + "\n")
        paths["report.json"] = self.run_dir / "report.json"
        return paths

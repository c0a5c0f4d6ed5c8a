"""`volbmd train seg` and its evaluation: AnatomyNet trained on multi-class vertebra labels from a
manifest (or a synthetic cohort it makes), evaluated with MONAI's Dice and 95% Hausdorff distance on
the manifest's test split, each test scan segmented by the ``monai`` backend on its own grid."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from volbmd.errors import InputError
from volbmd.models.cohort_config import Strict, TrainConfig, cohort_manifest, load_training_yaml, write_file

__all__ = ["SegTrainConfig", "load_seg_config", "train_seg_from_config", "evaluate_seg_model"]


class SegTrainingConfig(Strict):
    spacing_mm: float = 3.0  # the isotropic grid the network works on
    roi_size: list[int] = [48, 48, 48]
    widths: list[int] = [16, 20, 24]
    iterations: int = 500
    lr: float = 3e-3
    seed: int = 0


class SegTrainConfig(TrainConfig):
    kind: str = "seg"
    training: SegTrainingConfig = SegTrainingConfig()


def load_seg_config(path: str | os.PathLike) -> tuple[SegTrainConfig, Path]:
    return load_training_yaml(path, SegTrainConfig, "seg")


def _scans(manifest: Path, split: str) -> list[tuple[Path, Path]]:
    from volbmd.models.bmd_regressor import read_bmd_manifest

    seen: dict[tuple[Path, Path], None] = {}
    for row in read_bmd_manifest(manifest):
        if row.split == split:
            seen[(row.scan, row.labels)] = None
    return list(seen)


def _on_grid(volume, labels, spacing_mm: float):
    """The scan and its labels in the canonical frame on an isotropic grid (linear, nearest)."""
    from scipy import ndimage as ndi

    from volbmd.geometry import canonicalize
    from volbmd.volume import LabelMap, Volume

    canon, _ = canonicalize(volume)
    canon_labels, _ = canonicalize(labels)
    zoom = [s / spacing_mm for s in canon.spacing_mm]
    grid = (spacing_mm,) * 3
    image = ndi.zoom(canon.array.astype(np.float32), zoom, order=1)
    lab = ndi.zoom(canon_labels.array, zoom, order=0)
    return Volume(image, grid), LabelMap(lab.astype(np.int16), grid, labels=dict(canon_labels.labels))


def train_seg_from_config(config: SegTrainConfig, base: Path, out_dir: str | os.PathLike, *, say=print) -> dict:
    """Train AnatomyNet into ``out_dir``/model.pt; evaluate on the test split when there is one."""
    from volbmd.io import load_volume
    from volbmd.models.seg_train import train_anatomynet
    from volbmd.segment.masks import load_masks

    cohort = config.cohort
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    manifest = cohort_manifest(cohort, base, out, say)
    t = config.training
    cases = []
    for scan_path, labels_path in _scans(manifest, "train"):
        scan = load_volume(scan_path)
        cases.append(_on_grid(scan, load_masks(labels_path, scan, label_scheme=cohort.label_scheme), t.spacing_mm))
    if len(cases) < 2:
        raise InputError(f"{len(cases)} training scans (split 'train'); at least 2 are needed", manifest)
    t0 = time.perf_counter()
    train_anatomynet(
        cases,
        out / "model.pt",
        iterations=t.iterations,
        roi_size=tuple(t.roi_size),
        widths=tuple(t.widths),
        lr=t.lr,
        seed=t.seed,
    )
    summary = {
        "kind": "seg",
        "n_scans": len(cases),
        "iterations": t.iterations,
        "spacing_mm": t.spacing_mm,
        "train_seconds": time.perf_counter() - t0,
        "total_seconds": time.perf_counter() - start,
        "manifest": manifest.name,
    }
    write_file(out / "training.json", json.dumps(summary, indent=2))
    say(f"trained AnatomyNet on {len(cases)} scans in {summary['train_seconds']:.0f} s")
    if _scans(manifest, "test"):
        metrics = evaluate_seg_model(out, manifest, out, label_scheme=cohort.label_scheme)
        say(f"test split: Dice {metrics['dice_mean']:.3f}, HD95 {metrics['hd95_mm']:.1f} mm")
    return summary


def evaluate_seg_model(
    model_dir: str | os.PathLike,
    manifest: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    split: str = "test",
    label_scheme: str = "verse",
) -> dict[str, object]:
    """Segment each ``split`` scan of ``manifest``; Dice and HD95 (MONAI) per level against its
    labels, on the scan's own grid; write metrics.json."""
    import torch
    from monai.metrics import DiceMetric, HausdorffDistanceMetric

    from volbmd.io import load_volume
    from volbmd.segment.masks import load_masks
    from volbmd.segment.monai import MonaiSegmenter

    model_path = Path(model_dir)
    segmenter = MonaiSegmenter(model_path / "model.pt" if model_path.is_dir() else model_path)
    scans = _scans(Path(manifest), split)
    if not scans:
        raise InputError(f"no scans of split {split!r} to evaluate on", manifest)
    dice_metric = DiceMetric(include_background=False, reduction="none")
    hd_metric = HausdorffDistanceMetric(include_background=False, percentile=95.0, reduction="none")
    per_level: dict[str, dict[str, list[float]]] = {}
    seconds = 0.0
    for scan_path, labels_path in scans:
        scan = load_volume(scan_path)
        truth = load_masks(labels_path, scan, label_scheme=label_scheme)
        t = time.perf_counter()
        predicted = segmenter.segment(scan)
        seconds += time.perf_counter() - t
        for level, vid in truth.labels.items():
            want = truth.array == vid
            if not want.any():
                continue
            got = predicted.array == predicted.labels[level] if level in predicted.labels else np.zeros_like(want)
            onehot_got = torch.from_numpy(np.stack([~got, got])[None].astype(np.float32))
            onehot_want = torch.from_numpy(np.stack([~want, want])[None].astype(np.float32))
            entry = per_level.setdefault(level, {"dice": [], "hd95_mm": []})
            dice = dice_metric(onehot_got, onehot_want)
            assert isinstance(dice, torch.Tensor)
            entry["dice"].append(float(dice[0, 0]))
            if got.any():
                # spacing in the array's (z, y, x) order, as the arrays are
                hd = hd_metric(onehot_got, onehot_want, spacing=list(scan.spacing_mm))
                assert isinstance(hd, torch.Tensor)
                entry["hd95_mm"].append(float(hd[0, 0]))
    dices = [d for e in per_level.values() for d in e["dice"]]
    hds = [h for e in per_level.values() for h in e["hd95_mm"]]
    metrics: dict[str, object] = {
        "kind": "seg",
        "split": split,
        "manifest": Path(manifest).name,
        "n_scans": len(scans),
        "dice_mean": float(np.mean(dices)),
        "hd95_mm": float(np.mean(hds)) if hds else None,
        "levels": {
            lvl: {"dice_mean": float(np.mean(e["dice"])), "hd95_mm": float(np.mean(e["hd95_mm"])) if e["hd95_mm"] else None}
            for lvl, e in per_level.items()
        },
        "levels_missed": sum(1 for e in per_level.values() for d in e["dice"] if d == 0.0),
        "inference_seconds_per_scan": seconds / len(scans),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_file(out / "metrics.json", json.dumps(metrics, indent=2))
    return metrics

"""`volbmd train bmd` and `volbmd evaluate`: the BMD regressor trained from a manifest (or a synthetic
cohort it generates), evaluated on the manifest's test split into metrics.json and a picture."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from volbmd.errors import InputError
from volbmd.models.bmd_regressor import BmdTrainingOptions
from volbmd.models.cohort_config import Strict, TrainConfig, cohort_manifest, load_training_yaml, write_file

__all__ = ["BmdTrainConfig", "load_train_config", "train_from_config", "evaluate_bmd_model"]

_DEFAULTS = BmdTrainingOptions()  # the YAML's defaults are the regressor's own


class NetworkConfig(Strict):
    init_features: int = _DEFAULTS.init_features
    growth_rate: int = _DEFAULTS.growth_rate
    block_config: list[int] = list(_DEFAULTS.block_config)
    dropout_prob: float = _DEFAULTS.dropout_prob


class TrainingConfig(Strict):
    folds: int = _DEFAULTS.folds
    max_epochs: int = _DEFAULTS.max_epochs
    patience: int = _DEFAULTS.patience
    batch_size: int = _DEFAULTS.batch_size
    lr: float = _DEFAULTS.lr
    seed: int = _DEFAULTS.seed


class BmdTrainConfig(TrainConfig):
    kind: str = "bmd"
    network: NetworkConfig = NetworkConfig()
    training: TrainingConfig = TrainingConfig()


def load_train_config(path: str | os.PathLike) -> tuple[BmdTrainConfig, Path]:
    return load_training_yaml(path, BmdTrainConfig, "bmd")


def train_from_config(config: BmdTrainConfig, base: Path, out_dir: str | os.PathLike, *, say=print) -> dict:
    """Train (generating the synthetic cohort first when asked) into ``out_dir``: model.pt,
    training.json, and, when the manifest has a test split, metrics.json and bland_altman.png."""
    from volbmd.models.bmd_regressor import load_crops, read_bmd_manifest, train_bmd_regressor

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    manifest = cohort_manifest(config.cohort, base, out, say)
    rows = read_bmd_manifest(manifest)
    train_rows = [r for r in rows if r.split == "train"]
    if len(train_rows) < 10:
        raise InputError(f"{len(train_rows)} training rows (split 'train'); at least 10 are needed", manifest)
    crops, targets, groups = load_crops(train_rows, label_scheme=config.cohort.label_scheme)
    network = config.network.model_dump() | {"block_config": tuple(config.network.block_config)}
    options = BmdTrainingOptions(**config.training.model_dump(), **network)
    bar = _progress(options.folds * options.max_epochs)
    with bar:
        task = bar.add_task("training", total=options.folds * options.max_epochs)

        def progress(fold, epoch, loss, val_mae):
            bar.update(
                task, completed=fold * options.max_epochs + epoch + 1, description=f"fold {fold + 1}: val MAE {val_mae:.1f}"
            )

        summary = train_bmd_regressor(
            crops,
            targets,
            groups,
            out / "model.pt",
            options,
            progress=progress,
            extra={"manifest": manifest.name, "config": config.model_dump()},
        )
    summary["manifest"] = manifest.name
    summary["total_seconds"] = time.perf_counter() - start
    write_file(out / "training.json", json.dumps(summary, indent=2))
    say(
        f"trained {summary['folds']} folds on {summary['n_vertebrae']} vertebrae in {summary['seconds']:.0f} s "
        f"(out-of-fold MAE {summary['oof_mae_mg_cm3']:.1f} mg/cm³)"
    )
    if any(r.split == "test" for r in rows):
        metrics = evaluate_bmd_model(out, manifest, out, label_scheme=config.cohort.label_scheme)
        say(
            f"test split: MAE {metrics['mae_mg_cm3']:.1f} mg/cm³, RMSE {metrics['rmse_mg_cm3']:.1f}, r {metrics['pearson_r']:.3f}, "
            f"AUROC(<80) {metrics['auroc_lt80']}"
        )
    return summary


def _progress(total: int):
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=Console(stderr=True), transient=True
    )


def model_kind(model_dir: str | os.PathLike) -> str:
    """'seg' for an AnatomyNet checkpoint, 'bmd' for a BMD regressor (by the checkpoint's own mark)."""
    from volbmd.models.checkpoints import read_checkpoint

    checkpoint, path = read_checkpoint(
        model_dir, missing="no model here (model.pt from 'volbmd train')", what="a volbmd model"
    )
    if checkpoint.get("format") == "volbmd-anatomynet-1":
        return "seg"
    if checkpoint.get("kind") == "volbmd.bmd_regressor":
        return "bmd"
    raise InputError("not a volbmd model (from 'volbmd train bmd' or 'volbmd train seg')", path)


def evaluate_bmd_model(
    model_dir: str | os.PathLike,
    manifest: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    split: str = "test",
    label_scheme: str = "verse",
) -> dict[str, object]:
    """Predict every ``split`` row of ``manifest``; write metrics.json, predictions.csv and
    bland_altman.png into ``out_dir``; return the metrics."""
    from volbmd.models.bmd_regressor import BmdRegressor, load_crops, read_bmd_manifest
    from volbmd.models.metrics import bland_altman_png, bmd_metrics

    model = BmdRegressor(model_dir)
    rows = [r for r in read_bmd_manifest(manifest) if r.split == split]
    if len(rows) < 2:
        raise InputError(f"fewer than two rows of split {split!r} to evaluate on", manifest)
    crops, targets, _ = load_crops(rows, label_scheme=label_scheme)
    t = time.perf_counter()
    predicted, sd = model.predict_crops(crops)
    seconds = time.perf_counter() - t
    metrics = bmd_metrics(predicted, targets)
    metrics.update(
        split=split,
        manifest=Path(manifest).name,
        mean_sd_mg_cm3=float(np.mean(sd)),
        within_2sd_share=float(np.mean(np.abs(predicted - targets) <= 2 * sd)),
        inference_seconds_per_vertebra=seconds / len(rows),
        dice_mean=None,
        hd95_mm=None,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_file(out / "metrics.json", json.dumps(metrics, indent=2))
    lines = ["scan,level,bmd_mg_cm3,bmd_dl_mg_cm3,bmd_dl_sd_mg_cm3"]
    lines += [
        f"{r.scan.name},{r.level},{r.bmd_mg_cm3:.2f},{p:.2f},{s:.2f}" for r, p, s in zip(rows, predicted, sd, strict=True)
    ]
    write_file(out / "predictions.csv", "\n".join(lines) + "\n")
    write_file(
        out / "bland_altman.png",
        bland_altman_png(predicted, targets, metrics, f"BMD regressor on {Path(manifest).name} ({split})"),
    )
    return metrics

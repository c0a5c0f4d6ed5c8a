"""``volbmd train`` and ``volbmd evaluate``: the deep-learning BMD regressor."""

from __future__ import annotations

from pathlib import Path

import typer

from volbmd.cli_common import handles_input_errors

train_app = typer.Typer(
    help="Train a model: bmd (3D DenseNet BMD regressor) or seg (AnatomyNet vertebra labels).", no_args_is_help=True
)


@train_app.command("seg")
@handles_input_errors
def train_seg(
    config: Path = typer.Option(..., "--config", help="Training YAML, e.g. configs/models/anatomynet_demo.yaml."),
    out: Path = typer.Option(
        ..., "--out", help="Model folder (model.pt for --segmenter monai, training.json, metrics.json)."
    ),
):
    """Train AnatomyNet on multi-class vertebra labels from a manifest or a synthetic cohort."""
    from volbmd.models.train_seg import load_seg_config, train_seg_from_config

    cfg, base = load_seg_config(config)
    train_seg_from_config(cfg, base, out, say=typer.echo)
    typer.echo(f"wrote the model to {out} (use: volbmd run SCAN --segmenter monai --model {out})")


@train_app.command("bmd")
@handles_input_errors
def train_bmd(
    config: Path = typer.Option(..., "--config", help="Training YAML, e.g. configs/models/densenet_bmd_demo.yaml."),
    out: Path = typer.Option(..., "--out", help="Model folder (model.pt, training.json, metrics.json)."),
):
    """Train the DenseNet BMD regressor (a k-fold ensemble) from a manifest or a synthetic cohort."""
    from volbmd.models.train_bmd import load_train_config, train_from_config

    cfg, base = load_train_config(config)
    train_from_config(cfg, base, out, say=typer.echo)
    typer.echo(f"wrote the model to {out}")


@handles_input_errors
def evaluate(
    model: Path = typer.Option(..., "--model", help="A model folder from 'volbmd train bmd'."),
    manifest: Path = typer.Option(..., "--manifest", help="CSV: scan, labels, level, bmd_mg_cm3, split."),
    out: Path = typer.Option(..., "--out", help="Folder for metrics.json, predictions.csv, bland_altman.png."),
    split: str = typer.Option("test", "--split", help="Which rows of the manifest to evaluate on."),
    label_scheme: str = typer.Option("verse", "--label-scheme", help="Ids of the label files: verse | totalseg."),
):
    """Evaluate a model on a manifest: BMD (MAE, RMSE, r, Bland–Altman, AUROC for < 80 mg/cm³) or
    segmentation (Dice, HD95), by the model's kind."""
    from volbmd.models.train_bmd import evaluate_bmd_model, model_kind

    if model_kind(model) == "seg":
        from volbmd.models.train_seg import evaluate_seg_model

        s = evaluate_seg_model(model, manifest, out, split=split, label_scheme=label_scheme)
        typer.echo(f"{s['n_scans']} scans: Dice {s['dice_mean']:.3f}, HD95 {s['hd95_mm']} mm; wrote metrics.json to {out}")
        return
    m = evaluate_bmd_model(model, manifest, out, split=split, label_scheme=label_scheme)
    auroc = "—" if m["auroc_lt80"] is None else f"{m['auroc_lt80']:.3f}"
    typer.echo(
        f"{m['n']} vertebrae: MAE {m['mae_mg_cm3']:.1f} mg/cm³, RMSE {m['rmse_mg_cm3']:.1f}, r {m['pearson_r']:.3f}, "
        f"bias {m['bland_altman_bias_mg_cm3']:+.1f} ({m['bland_altman_lower_mg_cm3']:+.1f} to "
        f"{m['bland_altman_upper_mg_cm3']:+.1f}), AUROC(<80) {auroc}; wrote metrics.json, predictions.csv, bland_altman.png to {out}"
    )

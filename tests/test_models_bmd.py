"""The deep-learning BMD regressor: a real MONAI DenseNet trained for a few epochs on a small
synthetic cohort, its checkpoint, its metrics against a hand computation, and its place in the run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_cli import run

from volbmd.errors import InputError


@pytest.fixture(scope="module")
def tiny_cohort(tmp_path_factory):
    from volbmd.models.synthetic import SyntheticCohortOptions, make_synthetic_cohort

    out = tmp_path_factory.mktemp("cohort")
    return make_synthetic_cohort(out, SyntheticCohortOptions(n_scans=8, test_share=0.25, seed=1))


@pytest.fixture(scope="module")
def trained(tiny_cohort, tmp_path_factory):
    from volbmd.models.bmd_regressor import BmdTrainingOptions, load_crops, read_bmd_manifest, train_bmd_regressor

    rows = [r for r in read_bmd_manifest(tiny_cohort) if r.split == "train"]
    crops, targets, groups = load_crops(rows)
    model = tmp_path_factory.mktemp("model") / "model.pt"
    options = BmdTrainingOptions(
        folds=2, max_epochs=6, patience=6, batch_size=6, init_features=8, growth_rate=4, block_config=(2, 2)
    )
    summary = train_bmd_regressor(crops, targets, groups, model, options)
    return model, summary, crops, targets, groups


def test_synthetic_cohort_keeps_scans_in_one_split_and_bmd_in_range(tiny_cohort):
    from volbmd.models.bmd_regressor import read_bmd_manifest

    rows = read_bmd_manifest(tiny_cohort)
    assert len(rows) == 8 * 3
    split_of_scan = {}
    for r in rows:
        assert split_of_scan.setdefault(r.scan, r.split) == r.split
        assert 30.0 <= r.bmd_mg_cm3 <= 210.0 and r.scan.is_file() and r.labels.is_file()
    assert set(split_of_scan.values()) == {"train", "test"}


def test_body_crop_is_centred_on_the_body_with_its_mask():
    from volbmd.models.bmd_regressor import CROP_SHAPE, body_crop
    from volbmd.phantoms import make_spine_phantom

    p = make_spine_phantom(("L1", "L2"), spacing_mm=(2.0, 0.8, 0.8), trabecular_hu={"L1": 100.0, "L2": 250.0})
    crop = body_crop(p.volume, p.labels, "L2")
    assert crop.shape == (2, *CROP_SHAPE) and crop.dtype == np.float32
    centre = tuple(n // 2 for n in CROP_SHAPE)
    assert crop[1][centre] == pytest.approx(1.0)  # the body mask at the centre
    assert crop[1].sum() > 0.2 * crop[1].size  # most of the crop is the body ...
    assert crop[1][0].max() < 0.5 and crop[1][-1].max() < 0.5  # ... and the discs bound it
    hu = crop[0][centre] * 1200.0 - 200.0
    assert hu == pytest.approx(250.0, abs=5.0)
    assert body_crop(p.volume, p.labels, "L5") is None


def test_training_lowers_the_loss_and_the_checkpoint_reloads_to_the_same_predictions(trained):
    import torch

    from volbmd.models.bmd_regressor import BmdRegressor

    model_path, summary, crops, targets, groups = trained
    for fold in summary["history"]:
        losses = fold["train_loss"]
        assert losses[-1] < losses[0]
    reloaded = BmdRegressor(model_path)
    assert len(reloaded.nets) == summary["folds"]
    fold_of_row = np.asarray(summary["fold_of_row"])
    oof = np.asarray(summary["oof_predictions_mg_cm3"])
    for k, net in enumerate(reloaded.nets):  # each fold's saved net gives its validation predictions again
        rows = np.flatnonzero(fold_of_row == k)
        with torch.no_grad():
            again = net(torch.from_numpy(crops[rows])).squeeze(1).numpy() * reloaded.scale + reloaded.centre
        np.testing.assert_allclose(again, oof[rows], rtol=1e-5, atol=1e-3)
    a, sd_a = reloaded.predict_crops(crops[:4])
    b, sd_b = BmdRegressor(model_path.parent).predict_crops(crops[:4])
    np.testing.assert_array_equal(a, b)
    assert np.all(sd_a >= summary["oof_rmse_mg_cm3"] - 1e-6)  # the stated SD includes what training saw


def test_bmd_metrics_match_a_hand_computation():
    from volbmd.models.metrics import bmd_metrics

    reference = np.array([60.0, 75.0, 90.0, 120.0])
    predicted = np.array([70.0, 72.0, 80.0, 126.0])
    m = bmd_metrics(predicted, reference)
    diff = np.array([10.0, -3.0, -10.0, 6.0])
    assert m["mae_mg_cm3"] == pytest.approx(29.0 / 4)
    assert m["rmse_mg_cm3"] == pytest.approx(np.sqrt(245.0 / 4))
    assert m["bland_altman_bias_mg_cm3"] == pytest.approx(0.75)
    sd = np.sqrt(np.sum((diff - 0.75) ** 2) / 3)
    assert m["bland_altman_upper_mg_cm3"] == pytest.approx(0.75 + 1.96 * sd)
    assert m["pearson_r"] == pytest.approx(np.corrcoef(predicted, reference)[0, 1])
    # AUROC for < 80: positives 60, 75 (predicted 70, 72), negatives 90, 120 (80, 126): every
    # positive is predicted lower than every negative
    assert m["auroc_lt80"] == pytest.approx(1.0)
    m2 = bmd_metrics(np.array([85.0, 72.0, 80.0, 126.0]), reference)  # 85 > 80: one pair of four misordered
    assert m2["auroc_lt80"] == pytest.approx(0.75)
    assert bmd_metrics(predicted[2:], reference[2:])["auroc_lt80"] is None  # one class only


def test_train_and_evaluate_commands(tmp_path, tiny_cohort):
    config = tmp_path / "tiny.yaml"
    config.write_text(
        f"kind: bmd\ncohort: {{manifest: {tiny_cohort}}}\nnetwork: {{init_features: 8, growth_rate: 4, block_config: [2, 2]}}\n"
        "training: {folds: 2, max_epochs: 3, patience: 3, batch_size: 6}\n"
    )
    r = run("train", "bmd", "--config", config, "--out", tmp_path / "model")
    assert r.returncode == 0, r.stderr
    for name in ("model.pt", "training.json", "metrics.json", "bland_altman.png", "predictions.csv"):
        assert (tmp_path / "model" / name).is_file(), name
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    for key in ("mae_mg_cm3", "rmse_mg_cm3", "pearson_r", "bland_altman_bias_mg_cm3", "auroc_lt80", "dice_mean", "hd95_mm"):
        assert key in metrics
    assert metrics["n"] == 6 and metrics["split"] == "test"
    r = run(
        "evaluate", "--model", tmp_path / "model", "--manifest", tiny_cohort, "--split", "train", "--out", tmp_path / "eval"
    )
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["n"] == 18
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: bmd\ncohort: {}\n")
    r = run("train", "bmd", "--config", bad, "--out", tmp_path / "m2")
    assert r.returncode == 2 and "either a manifest or a synthetic section" in r.stderr
    r = run("train", "seg", "--config", config, "--out", tmp_path / "m2")  # a bmd config
    assert r.returncode == 2 and "kind 'bmd': this command trains 'seg' models" in r.stderr
    bad.write_text(f"kind: bmd\ncohort: {{manifest: {tiny_cohort}}}\ntraining: {{epochs: 3}}\n")
    r = run("train", "bmd", "--config", bad, "--out", tmp_path / "m2")
    assert r.returncode == 2 and "training.epochs: Extra inputs are not permitted" in r.stderr
    r = run("evaluate", "--model", tmp_path, "--manifest", tiny_cohort, "--out", tmp_path / "e2")
    assert r.returncode == 2 and "no model here" in r.stderr


def test_run_with_a_bmd_model_reports_both_and_flags_disagreement(trained, tmp_path):
    import volbmd
    from volbmd.models.bmd_regressor import BmdRegressor, add_dl_estimates
    from volbmd.phantoms import make_spine_phantom

    model_path, *_ = trained
    p = make_spine_phantom(("L1", "L2"), spacing_mm=(2.0, 0.8, 0.8), noise_hu=10.0)
    volbmd.write_volume(p.volume, tmp_path / "ct.nii.gz")
    volbmd.write_volume(p.labels, tmp_path / "m.nii.gz")
    r = run(
        "run",
        tmp_path / "ct.nii.gz",
        "--masks",
        tmp_path / "m.nii.gz",
        "--bmd-model",
        model_path.parent,
        "--out",
        tmp_path / "out",
    )
    assert r.returncode == 0, r.stderr
    assert "DL BMD" in r.stdout
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    for v in report["vertebrae"]:
        assert v["bmd_dl_mg_cm3"] is not None and v["bmd_dl_sd_mg_cm3"] > 0
    header = (tmp_path / "out" / "vertebrae.csv").read_text().splitlines()[0]
    assert "bmd_dl_mg_cm3" in header and "bmd_dl_sd_mg_cm3" in header
    # a calibrated value far from the network's is flagged
    analysed = volbmd.analyze(p.volume, masks=tmp_path / "m.nii.gz")
    art = analysed.artifacts
    analysed.vertebrae[0].bmd_mg_cm3 = 900.0
    add_dl_estimates(analysed, art.volume, art.labels, BmdRegressor(model_path))
    assert any(f.startswith("dl_disagrees") for f in analysed.vertebrae[0].flags)
    with pytest.raises(InputError, match="no BMD model here"):
        BmdRegressor(tmp_path)


def test_train_seg_and_evaluate_with_monai_metrics(tmp_path, tiny_cohort):
    from volbmd.io import load_volume
    from volbmd.models.bmd_regressor import read_bmd_manifest
    from volbmd.segment.masks import load_masks
    from volbmd.segment.monai import MonaiSegmenter

    config = tmp_path / "seg.yaml"
    config.write_text(
        f"kind: seg\ncohort: {{manifest: {tiny_cohort}}}\n"
        "training: {spacing_mm: 4.0, roi_size: [32, 32, 32], widths: [8, 10], iterations: 12}\n"
    )
    r = run("train", "seg", "--config", config, "--out", tmp_path / "seg")
    assert r.returncode == 0, r.stderr
    metrics = json.loads((tmp_path / "seg" / "metrics.json").read_text())
    assert metrics["kind"] == "seg" and metrics["n_scans"] == 2 and 0.0 <= metrics["dice_mean"] <= 1.0
    # the per-level Dice is MONAI's, and equals a plain computation on the backend's own output
    rows = [row for row in read_bmd_manifest(tiny_cohort) if row.split == "test"]
    segmenter = MonaiSegmenter(tmp_path / "seg" / "model.pt")
    dices: dict[str, list[float]] = {}
    for scan_path, labels_path in dict.fromkeys((row.scan, row.labels) for row in rows):
        scan = load_volume(scan_path)
        truth = load_masks(labels_path, scan)
        got = segmenter.segment(scan)
        for level, vid in truth.labels.items():
            a = got.array == got.labels[level] if level in got.labels else np.zeros(truth.shape, bool)
            b = truth.array == vid
            dices.setdefault(level, []).append(2 * np.sum(a & b) / (a.sum() + b.sum()))
    for level, values in dices.items():
        assert metrics["levels"][level]["dice_mean"] == pytest.approx(np.mean(values), abs=1e-5)
    r = run("evaluate", "--model", tmp_path / "seg", "--manifest", tiny_cohort, "--out", tmp_path / "seg_eval")
    assert r.returncode == 0, r.stderr
    assert "Dice" in r.stdout
    assert json.loads((tmp_path / "seg_eval" / "metrics.json").read_text())["dice_mean"] == pytest.approx(
        metrics["dice_mean"]
    )

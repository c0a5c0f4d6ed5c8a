"""A 3D DenseNet (MONAI) that regresses a vertebra's trabecular BMD from a crop around its body.

Input: two channels on a fixed grid (:data:`CROP_SHAPE` voxels of :data:`CROP_SPACING_MM`, the
canonical frame) centred on the body: HU clipped to :data:`HU_WINDOW` and scaled to 0–1, and the
body mask (split off the whole-vertebra label as for the measurement). Output: BMD in mg/cm³.

Uncertainty: the model is a k-fold ensemble (one network per fold, trained on the other folds with
early stopping on its own fold). A prediction's SD combines the ensemble's spread with the
out-of-fold RMSE measured in training, so the SD a model states is one it was seen to achieve.

Checkpoint (``model.pt``, torch.save of a dict): the fold state dicts, the network settings, crop
grid, HU window, target scaling, out-of-fold RMSE, the training manifest's name, the volbmd version.
"""

from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from volbmd.errors import InputError

__all__ = [
    "CROP_SHAPE",
    "CROP_SPACING_MM",
    "HU_WINDOW",
    "BmdTrainingOptions",
    "body_crop",
    "read_bmd_manifest",
    "train_bmd_regressor",
    "BmdRegressor",
]

CROP_SHAPE = (20, 32, 40)  # z, y, x voxels
CROP_SPACING_MM = (1.6, 1.25, 1.25)  # 32 × 40 × 50 mm: one body with a margin
HU_WINDOW = (-200.0, 1000.0)
TARGET_CENTRE, TARGET_SCALE = 120.0, 60.0  # mg/cm³: the network predicts (BMD − centre) / scale


def body_crop(volume, labels, level: str) -> np.ndarray | None:
    """The (2, *CROP_SHAPE) float32 input of ``level``: HU (windowed to 0–1) and body mask around
    the body's centroid; None when the level has no voxels."""
    from scipy import ndimage as ndi

    from volbmd.geometry import canonicalize
    from volbmd.vertebrae import vertebra_masks

    canon, _ = canonicalize(volume, copy=False)
    canon_labels, _ = canonicalize(labels, copy=False)
    (vm,) = vertebra_masks(canon_labels, levels=[level])
    if vm.box is None or vm.body is None or not vm.body.any():
        return None
    spacing = np.asarray(canon.spacing_mm)
    start = np.array([s.start for s in vm.box], float)
    centroid_index = start + np.argwhere(vm.body).mean(axis=0)
    offsets = [(np.arange(n) - (n - 1) / 2) * d for n, d in zip(CROP_SHAPE, CROP_SPACING_MM, strict=True)]
    grid = np.meshgrid(*offsets, indexing="ij")
    coords = np.stack([centroid_index[a] + grid[a] / spacing[a] for a in range(3)])
    lo, hi = HU_WINDOW
    hu = ndi.map_coordinates(np.asarray(canon.array, np.float32), coords, order=1, mode="nearest")
    body_full = np.zeros(canon.shape, np.float32)
    body_full[vm.box] = vm.body
    mask = ndi.map_coordinates(body_full, coords, order=1, mode="constant", cval=0.0)
    return np.stack([(np.clip(hu, lo, hi) - lo) / (hi - lo), mask]).astype(np.float32)


@dataclass(frozen=True)
class ManifestRow:
    scan: Path
    labels: Path
    level: str
    bmd_mg_cm3: float
    split: str


def read_bmd_manifest(path: str | os.PathLike) -> list[ManifestRow]:
    """Rows of a training manifest (scan, labels, level, bmd_mg_cm3, split; paths relative to it)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("not found", path)
    rows = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("scan", "labels", "level", "bmd_mg_cm3") if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"manifest lacks the column(s) {', '.join(missing)}", path)
        for n, row in enumerate(reader, start=2):
            try:
                bmd = float(row["bmd_mg_cm3"])
            except ValueError:
                raise InputError(f"line {n}: bmd_mg_cm3 is not a number", path) from None
            rows.append(
                ManifestRow(
                    path.parent / row["scan"],
                    path.parent / row["labels"],
                    row["level"].strip(),
                    bmd,
                    (row.get("split") or "train").strip(),
                )
            )
    if not rows:
        raise InputError("the manifest has no rows", path)
    return rows


def load_crops(rows: list[ManifestRow], *, label_scheme: str = "verse") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Crops (n, 2, *CROP_SHAPE), targets (n,) and a group id per row (its scan, for splitting),
    each scan read once."""
    from volbmd.io import load_volume
    from volbmd.segment.masks import load_masks

    crops, targets, groups = [], [], []
    cache: dict[tuple[Path, Path], tuple] = {}
    for row in rows:
        key = (row.scan, row.labels)
        if key not in cache:
            cache.clear()  # rows of one scan come together in a manifest; keep one scan in memory
            scan = load_volume(row.scan)
            cache[key] = (scan, load_masks(row.labels, scan, label_scheme=label_scheme))
        scan, labels = cache[key]
        crop = body_crop(scan, labels, row.level)
        if crop is None:
            raise InputError(f"level {row.level} has no voxels in the labels", row.labels)
        crops.append(crop)
        targets.append(row.bmd_mg_cm3)
        groups.append(str(row.scan))
    return np.stack(crops), np.asarray(targets, np.float32), groups


@dataclass(frozen=True)
class BmdTrainingOptions:
    folds: int = 3
    max_epochs: int = 80
    patience: int = 15
    batch_size: int = 16
    lr: float = 2e-3
    seed: int = 0
    init_features: int = 16
    growth_rate: int = 8
    block_config: tuple[int, ...] = (3, 3, 3)
    dropout_prob: float = 0.1
    noise_augment: float = 0.01  # SD of noise added to the HU channel (0–1 scale) while training
    augment: bool = True  # plausible anatomy: small rotations and scaling, thicker slices (MONAI transforms)
    network: dict = field(default_factory=dict)


def _augmentation(seed: int):
    """MONAI transforms that keep anatomy plausible, applied per vertebra while training: rotations
    up to 8°, scaling by ±5% (both channels together), and a blur along z on the HU channel as a
    thicker slice would give."""
    from monai.transforms import Compose, RandAffine, RandGaussianSmooth

    transform = Compose(
        [
            RandAffine(
                prob=0.5,
                rotate_range=(0.14, 0.14, 0.14),
                scale_range=(0.05, 0.05, 0.05),
                mode="bilinear",
                padding_mode="border",
            ),
            RandGaussianSmooth(sigma_x=(0.0, 1.2), sigma_y=(0.0, 0.01), sigma_z=(0.0, 0.01), prob=0.3),
        ]
    )
    transform.set_random_state(seed)
    return transform


def _network(options: dict):
    from monai.networks.nets import DenseNet

    return DenseNet(
        spatial_dims=3,
        in_channels=2,
        out_channels=1,
        init_features=options["init_features"],
        growth_rate=options["growth_rate"],
        block_config=tuple(options["block_config"]),
        dropout_prob=options["dropout_prob"],
    )


def _device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _fold_of(groups: list[str], folds: int, seed: int) -> np.ndarray:
    unique = sorted(set(groups))
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of_group = {unique[i]: k % folds for k, i in enumerate(order)}
    return np.asarray([fold_of_group[g] for g in groups])


def train_bmd_regressor(
    crops: np.ndarray,
    targets: np.ndarray,
    groups: list[str],
    out_path: str | os.PathLike,
    options: BmdTrainingOptions | None = None,
    *,
    progress=None,
    extra: dict | None = None,
) -> dict:
    """Train the fold ensemble; write the checkpoint; return the training summary (per-fold epochs,
    losses, out-of-fold RMSE and MAE)."""
    import torch

    from volbmd import __version__

    options = options or BmdTrainingOptions()
    torch.manual_seed(options.seed)
    rng = np.random.default_rng(options.seed)
    device = _device()
    net_options = {
        "init_features": options.init_features,
        "growth_rate": options.growth_rate,
        "block_config": list(options.block_config),
        "dropout_prob": options.dropout_prob,
    }
    folds = max(2, min(options.folds, len(set(groups))))
    fold = _fold_of(groups, folds, options.seed)
    x_all = torch.from_numpy(crops)
    y_all = torch.from_numpy((targets - TARGET_CENTRE) / TARGET_SCALE).float()
    states, history, oof = [], [], np.zeros(len(targets), np.float64)
    augment = _augmentation(options.seed) if options.augment else None
    start = time.perf_counter()
    for k in range(folds):
        train_idx, val_idx = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        net = _network(net_options).to(device)
        optimiser = torch.optim.Adam(net.parameters(), lr=options.lr)
        best, best_state, best_epoch, losses = np.inf, None, 0, []
        for epoch in range(options.max_epochs):
            net.train()
            perm = rng.permutation(train_idx)
            epoch_loss = 0.0
            for b in range(0, len(perm), options.batch_size):
                idx = perm[b : b + options.batch_size]
                x = x_all[idx].clone()
                if augment is not None:
                    x = torch.stack([torch.as_tensor(augment(sample)) for sample in x]).float()
                if options.noise_augment > 0:
                    x[:, 0] += options.noise_augment * torch.randn_like(x[:, 0])
                if rng.uniform() < 0.5:  # left–right mirror: anatomy stays plausible
                    x = torch.flip(x, dims=[4])
                optimiser.zero_grad()
                loss = torch.nn.functional.smooth_l1_loss(net(x.to(device)).squeeze(1), y_all[idx].to(device))
                loss.backward()
                optimiser.step()
                epoch_loss += float(loss.detach()) * len(idx)
            losses.append(epoch_loss / len(perm))
            net.eval()
            with torch.no_grad():
                val = net(x_all[val_idx].to(device)).squeeze(1).cpu().numpy()
            val_mae = float(np.mean(np.abs(val - y_all[val_idx].numpy())))
            if val_mae < best:
                best, best_epoch = val_mae, epoch
                best_state = {name: t.detach().cpu().clone() for name, t in net.state_dict().items()}
                oof[val_idx] = val * TARGET_SCALE + TARGET_CENTRE
            elif epoch - best_epoch >= options.patience:
                break
            if progress is not None:
                progress(k, epoch, losses[-1], val_mae * TARGET_SCALE)
        states.append(best_state)
        history.append({"fold": k, "epochs": len(losses), "best_epoch": best_epoch, "train_loss": losses})
    err = oof - targets
    summary = {
        "folds": folds,
        "n_vertebrae": int(len(targets)),
        "oof_rmse_mg_cm3": float(np.sqrt(np.mean(err**2))),
        "oof_mae_mg_cm3": float(np.mean(np.abs(err))),
        "seconds": time.perf_counter() - start,
        "history": history,
        "fold_of_row": fold.tolist(),
        "oof_predictions_mg_cm3": oof.tolist(),
    }
    torch.save(
        {
            "kind": "volbmd.bmd_regressor",
            "volbmd_version": __version__,
            "network": net_options,
            "states": states,
            "crop_shape": list(CROP_SHAPE),
            "crop_spacing_mm": list(CROP_SPACING_MM),
            "hu_window": list(HU_WINDOW),
            "target": [TARGET_CENTRE, TARGET_SCALE],
            "oof_rmse_mg_cm3": summary["oof_rmse_mg_cm3"],
            "seed": options.seed,
            **(extra or {}),
        },
        out_path,
    )
    return summary


class BmdRegressor:
    """A trained fold ensemble, loaded once and used for many vertebrae."""

    def __init__(self, path: str | os.PathLike):
        from volbmd.models.checkpoints import read_checkpoint

        checkpoint, path = read_checkpoint(
            path, missing="no BMD model here (model.pt from 'volbmd train bmd')", what="a volbmd BMD model"
        )
        if checkpoint.get("kind") != "volbmd.bmd_regressor":
            raise InputError("not a volbmd BMD model (model.pt from 'volbmd train bmd')", path)
        if tuple(checkpoint["crop_shape"]) != CROP_SHAPE or tuple(checkpoint["crop_spacing_mm"]) != CROP_SPACING_MM:
            raise InputError("the model was trained on another crop grid than this volbmd uses", path)
        self.path = path
        self.device = _device()
        self.oof_rmse_mg_cm3 = float(checkpoint["oof_rmse_mg_cm3"])
        self.centre, self.scale = (float(v) for v in checkpoint["target"])
        self.nets = []
        for state in checkpoint["states"]:
            net = _network(checkpoint["network"])
            net.load_state_dict(state)
            self.nets.append(net.to(self.device).eval())

    def predict_crops(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """BMD (mg/cm³) and its SD for each crop: the fold mean, and the folds' spread combined
        with the out-of-fold RMSE."""
        import torch

        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(crops, np.float32)).to(self.device)
            preds = np.stack([net(x).squeeze(1).cpu().numpy() for net in self.nets]) * self.scale + self.centre
        mean = preds.mean(axis=0)
        spread = preds.std(axis=0, ddof=1) if len(self.nets) > 1 else np.zeros_like(mean)
        return mean, np.sqrt(spread**2 + self.oof_rmse_mg_cm3**2)


#: A calibrated BMD and the network's differing by more than this many combined SDs get a flag.
DISAGREE_SDS = 2.0


def add_dl_estimates(report, volume, labels, model: BmdRegressor | str | os.PathLike) -> None:
    """Set ``bmd_dl_mg_cm3`` ± ``bmd_dl_sd_mg_cm3`` on each measured level of ``report`` (from the
    scan and its labels), and flag ``dl_disagrees`` where it and the calibrated BMD differ by more
    than :data:`DISAGREE_SDS` combined SDs."""
    regressor = model if isinstance(model, BmdRegressor) else BmdRegressor(model)
    records = [v for v in report.vertebrae if v.trabecular_n_voxels > 0]
    crops, kept = [], []
    for record in records:
        crop = body_crop(volume, labels, record.level)
        if crop is not None:
            crops.append(crop)
            kept.append(record)
    if not crops:
        return
    estimates, sds = regressor.predict_crops(np.stack(crops))
    for record, estimate, sd in zip(kept, estimates, sds, strict=True):
        record.bmd_dl_mg_cm3 = float(estimate)
        record.bmd_dl_sd_mg_cm3 = float(sd)
        if record.bmd_mg_cm3 is not None:
            combined = float(np.hypot(sd, record.bmd_sd_mg_cm3 or 0.0))
            difference = record.bmd_mg_cm3 - float(estimate)
            if abs(difference) > DISAGREE_SDS * combined:
                record.flags.append(f"dl_disagrees:{difference:+.0f}_mg_cm3")

"""Train a tiny real nnU-Net v2 model on synthetic spines (for tests and for trying the backend).

nnU-Net reads its folders from environment variables; this module sets them for the current
process to folders under ``work_dir`` (the user never has to), plus low worker counts for CPUs.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path

__all__ = ["train_tiny_model", "synthetic_cases"]


def synthetic_cases(n_cases: int = 6, seed: int = 0):
    """Small CT-like phantoms of L1–L2 with varied HU, heights and noise (3 mm voxels, 96 mm field)."""
    import numpy as np

    from volbmd.phantoms import make_spine_phantom

    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n_cases):
        p = make_spine_phantom(
            ("L1", "L2"),
            spacing_mm=(3.0, 3.0, 3.0),
            trabecular_hu={"L1": float(rng.uniform(60, 220)), "L2": float(rng.uniform(60, 220))},
            body_height_mm=float(rng.uniform(22, 30)),
            noise_hu=float(rng.uniform(5, 20)),
            seed=int(rng.integers(1 << 30)),
            field_of_view_mm=(96.0, 96.0),  # around the spine: a small patch and a fast network
        )
        cases.append((f"case{i:03d}", p.volume, p.labels))
    return cases


def train_tiny_model(
    out_dir: str | os.PathLike,
    *,
    work_dir: str | os.PathLike | None = None,
    n_cases: int = 6,
    dataset_id: int = 987,
    seed: int = 0,
) -> Path:
    """Build a synthetic raw dataset, plan, preprocess and train ``volbmdTinyTrainer`` (fold 0).

    Returns ``out_dir``, a model folder that ``--segmenter nnunet --model`` takes.
    """
    import numpy as np
    import torch

    from volbmd.segment.nnunet_dataset import write_nnunet_dataset

    out_dir = Path(out_dir)
    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="volbmd-nnunet-"))
    env = {
        "nnUNet_raw": str(work / "raw"),
        "nnUNet_preprocessed": str(work / "preprocessed"),
        "nnUNet_results": str(work / "results"),
        "nnUNet_def_n_proc": "1",
        "nnUNet_n_proc_DA": "1",
        "nnUNet_compile": "false",
        "nnUNet_extTrainer": str(Path(__file__).resolve().parent / "nnunet_trainers"),
    }
    for key, value in env.items():
        os.environ[key] = value
        if key.startswith("nnUNet_") and key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
            Path(value).mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments, preprocess
    from nnunetv2.run.run_training import run_training

    folder = write_nnunet_dataset(synthetic_cases(n_cases, seed), env["nnUNet_raw"], dataset_id, name="VolbmdTiny")
    extract_fingerprints([dataset_id], num_processes=1, check_dataset_integrity=True, verbose=False, show_progress_bar=False)
    plan_experiments([dataset_id])
    preprocess([dataset_id], configurations=("3d_fullres",), num_processes=(1,), show_progress_bar=False)
    # the same model each time: augmentation in this process (its worker processes draw their own
    # seeds), and patch sampling, augmentation and initial weights seeded (a tiny model varies a lot
    # between unseeded runs, and tests assert on what it finds)
    os.environ["nnUNet_n_proc_DA"] = "0"
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    run_training(str(dataset_id), "3d_fullres", 0, trainer_class_name="volbmdTinyTrainer", device=torch.device("cpu"))
    model = Path(env["nnUNet_results"]) / folder.name / "volbmdTinyTrainer__nnUNetPlans__3d_fullres"
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("dataset.json", "plans.json", "dataset_fingerprint.json"):
        if (model / name).exists():
            shutil.copy2(model / name, out_dir / name)
    (out_dir / "fold_0").mkdir(exist_ok=True)
    for name in ("checkpoint_final.pth", "progress.png", "validation/summary.json"):
        src = model / "fold_0" / name
        if src.exists():
            dst = out_dir / "fold_0" / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    return out_dir

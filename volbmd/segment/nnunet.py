"""The ``nnunet`` backend: nnunetv2's own nnUNetPredictor on a model folder, built once, reused.

``--model DIR`` is an nnU-Net v2 trained-model folder (``<Trainer>__<Plans>__<configuration>``
holding dataset.json, plans.json and fold_*/checkpoint_*.pth), e.g. one written by
tools/train_tiny_nnunet.py or a local TotalSegmentator model folder. Label names come from the
model's dataset.json ("vertebrae_L1" or "L1") and map to levels; other structures are ignored.
Volumes are predicted in the canonical LPS frame (``orientation="LPS"``) or RAS, and the result is
put back on the scan's own grid.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

import numpy as np

from volbmd.errors import InputError
from volbmd.geometry import canonicalize, uncanonicalize
from volbmd.labels import load_label_scheme
from volbmd.volume import LabelMap, Volume

__all__ = ["NnUNetSegmenter", "levels_from_dataset_json"]

_LEVEL_NAME = re.compile(r"^(?:vertebrae?_)?(C[1-7]|T1[0-3]|T[1-9]|L[1-6]|S1)$", re.IGNORECASE)


def levels_from_dataset_json(dataset: dict) -> dict[int, str]:
    """nnU-Net label id → level for the vertebra labels of a dataset.json."""
    out = {}
    for name, value in dataset.get("labels", {}).items():
        match = _LEVEL_NAME.match(str(name))
        if match and isinstance(value, int):
            out[value] = match.group(1).upper()
    return out


@contextlib.contextmanager
def _ext_trainer_path():
    """Let nnU-Net find volbmd's trainer classes while a model folder is loaded."""
    own = str(Path(__file__).resolve().parent / "nnunet_trainers")
    before = os.environ.get("nnUNet_extTrainer")
    os.environ["nnUNet_extTrainer"] = own if not before else os.pathsep.join([before, own])
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("nnUNet_extTrainer", None)
        else:
            os.environ["nnUNet_extTrainer"] = before


class NnUNetSegmenter:
    """Vertebra segmentation with a trained nnU-Net v2 model folder."""

    name = "nnunet"

    def __init__(self, model_dir: str | os.PathLike, *, folds=None, checkpoint: str = "checkpoint_final.pth",
                 mirroring: bool = False, device: str = "cpu", tile_step_size: float = 0.5,
                 orientation: str = "LPS"):
        import torch
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        model_dir = Path(model_dir)
        dataset_json = model_dir / "dataset.json"
        if not dataset_json.is_file() or not (model_dir / "plans.json").is_file():
            raise InputError("not an nnU-Net model folder (dataset.json and plans.json expected)", model_dir)
        if folds is None:
            folds = sorted(int(p.name.split("_")[1]) for p in model_dir.glob("fold_*") if (p / checkpoint).is_file())
            if not folds:
                raise InputError(f"no fold_*/{checkpoint} in the model folder", model_dir)
        self.level_of = levels_from_dataset_json(json.loads(dataset_json.read_text()))
        if not self.level_of:
            raise InputError("the model's dataset.json names no vertebra labels (vertebrae_L1, L1, …)", dataset_json)
        if device == "cuda" and not torch.cuda.is_available():
            raise InputError("device cuda requested but no GPU is available")
        if orientation not in ("LPS", "RAS"):
            raise InputError(f"orientation must be LPS or RAS, got {orientation}")
        self.orientation = orientation
        self.model_dir = model_dir
        self.predictor = nnUNetPredictor(tile_step_size=tile_step_size, use_gaussian=True, use_mirroring=mirroring,
                                         perform_everything_on_device=device == "cuda", device=torch.device(device),
                                         verbose=False, verbose_preprocessing=False, allow_tqdm=False)
        with _ext_trainer_path():
            self.predictor.initialize_from_trained_model_folder(str(model_dir), use_folds=tuple(folds),
                                                                checkpoint_name=checkpoint)

    def segment(self, volume: Volume) -> LabelMap:
        canon, reo = canonicalize(volume)
        array = canon.array
        if self.orientation == "RAS":
            array = array[:, ::-1, ::-1]
        image = np.ascontiguousarray(array, dtype=np.float32)[None]
        props = {"spacing": [float(s) for s in canon.spacing_mm]}
        seg = self.predictor.predict_single_npy_array(image, props, None, None, False)
        seg = np.asarray(seg)
        if self.orientation == "RAS":
            seg = seg[:, ::-1, ::-1]
        verse = load_label_scheme("verse")
        out = np.zeros(canon.shape, np.int16)
        present = {}
        for model_id, level in self.level_of.items():
            sel = seg == model_id
            if sel.any() and level in verse:
                out[sel] = verse[level]
                present[level] = verse[level]
        labels = LabelMap.on_grid_of(canon, out, present, source=f"nnU-Net {self.model_dir.name}")
        return uncanonicalize(labels, reo)

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
from volbmd.types import SpacingZYX
from volbmd.volume import LabelMap, Volume

__all__ = ["NnUNetSegmenter", "levels_from_dataset_json", "body_box"]

#: Margin kept around the patient when the scan is cropped before prediction.
BODY_MARGIN_MM = 15.0

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


def body_box(hu: np.ndarray, spacing_mm: SpacingZYX, margin_mm: float = BODY_MARGIN_MM) -> tuple[slice, slice, slice]:
    """The box of the patient (the largest region above −500 HU, found on every second voxel) grown
    by ``margin_mm``; the whole array when the scan does not look like CT (no air below −900 HU) or
    no patient is found. Predicting only this box saves the network's work on air."""
    from scipy import ndimage as ndi

    whole = (slice(0, hu.shape[0]), slice(0, hu.shape[1]), slice(0, hu.shape[2]))
    coarse = np.asarray(hu[::2, ::2, ::2])
    if coarse.size == 0 or coarse.min() > -900:
        return whole
    objects, n = ndi.label(coarse > -500)
    if n == 0:
        return whole
    sizes = np.bincount(objects.ravel())
    sizes[0] = 0
    found = ndi.find_objects((objects == int(np.argmax(sizes))).astype(np.uint8))[0]
    box = []
    for axis, sl in enumerate(found):
        pad = int(np.ceil(margin_mm / float(spacing_mm[axis]))) + 2
        box.append(slice(max(0, 2 * sl.start - pad), min(hu.shape[axis], 2 * sl.stop + pad)))
    return box[0], box[1], box[2]


def _trainer_class(name: str):
    """nnU-Net's trainer class by name. nnU-Net itself imports every trainer module it ships until
    one matches (about 5 s); the plain trainer and volbmd's own are imported directly."""
    import importlib
    import pkgutil

    if name == "nnUNetTrainer":
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

        return nnUNetTrainer
    from volbmd.segment import nnunet_trainers

    for module in pkgutil.iter_modules(nnunet_trainers.__path__):
        found = getattr(importlib.import_module(f"{nnunet_trainers.__name__}.{module.name}"), name, None)
        if found is not None:
            return found
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    with _ext_trainer_path():
        return recursive_find_trainer_class_by_name(name)


def _initialize_predictor(predictor, model_dir: Path, folds, checkpoint_name: str) -> None:
    """What nnUNetPredictor.initialize_from_trained_model_folder does (read the plans, the
    checkpoints and build the network), with a direct trainer lookup, then nnU-Net's own
    ``manual_initialization``."""
    import torch
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    dataset_json = json.loads((model_dir / "dataset.json").read_text())
    plans_manager = PlansManager(json.loads((model_dir / "plans.json").read_text()))
    parameters, trainer_name, configuration, mirroring_axes = [], None, None, None
    for fold in folds:
        ckpt = torch.load(model_dir / f"fold_{fold}" / checkpoint_name, map_location=torch.device("cpu"), weights_only=False)
        if trainer_name is None:
            trainer_name = ckpt["trainer_name"]
            configuration = ckpt["init_args"]["configuration"]
            mirroring_axes = ckpt.get("inference_allowed_mirroring_axes")
        parameters.append(ckpt["network_weights"])
    if trainer_name is None or configuration is None:
        raise InputError("no fold checkpoint was read", model_dir)
    configuration_manager = plans_manager.get_configuration(configuration)
    n_inputs = determine_num_input_channels(plans_manager, configuration_manager, dataset_json)
    n_outputs = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
    network = _trainer_class(trainer_name).build_network_architecture(
        plans_manager, configuration_manager, n_inputs, n_outputs, enable_deep_supervision=False
    )
    network.load_state_dict(parameters[0])
    predictor.manual_initialization(
        network, plans_manager, configuration_manager, parameters, dataset_json, trainer_name, mirroring_axes
    )


class NnUNetSegmenter:
    """Vertebra segmentation with a trained nnU-Net v2 model folder."""

    name = "nnunet"

    def __init__(
        self,
        model_dir: str | os.PathLike,
        *,
        folds=None,
        checkpoint: str = "checkpoint_final.pth",
        mirroring: bool = False,
        device: str = "cpu",
        tile_step_size: float = 0.5,
        orientation: str = "LPS",
    ):
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
        self.predictor = nnUNetPredictor(
            tile_step_size=tile_step_size,
            use_gaussian=True,
            use_mirroring=mirroring,
            perform_everything_on_device=device == "cuda",
            device=torch.device(device),
            verbose=False,
            verbose_preprocessing=False,
            allow_tqdm=False,
        )
        _initialize_predictor(self.predictor, model_dir, folds, checkpoint)

    def segment(self, volume: Volume) -> LabelMap:
        canon, reo = canonicalize(volume)
        box = body_box(canon.array, canon.spacing_mm)  # the air around the patient is not predicted
        array = canon.array[box]
        if self.orientation == "RAS":
            array = array[:, ::-1, ::-1]
        image = np.ascontiguousarray(array, dtype=np.float32)[None]
        props = {"spacing": [float(s) for s in canon.spacing_mm]}
        crop_seg = np.asarray(self.predictor.predict_single_npy_array(image, props, None, None, False))
        if self.orientation == "RAS":
            crop_seg = crop_seg[:, ::-1, ::-1]
        seg = np.zeros(canon.shape, crop_seg.dtype)
        seg[box] = crop_seg
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

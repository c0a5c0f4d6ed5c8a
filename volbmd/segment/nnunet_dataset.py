"""Turn (scan, vertebra labels) pairs into an nnU-Net v2 raw dataset, so users can train their own.

Images and labels are written in the canonical LPS frame (the nnU-Net backend predicts there too);
label ids are 1…n in cranio-caudal order, named ``vertebrae_<level>`` like TotalSegmentator.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from volbmd.errors import InputError
from volbmd.geometry import canonicalize
from volbmd.io import write_volume
from volbmd.labels import level_rank
from volbmd.volume import LabelMap, Volume

__all__ = ["write_nnunet_dataset", "dataset_folder_name"]


def dataset_folder_name(dataset_id: int, name: str) -> str:
    if not (1 <= dataset_id <= 999):
        raise InputError(f"nnU-Net dataset ids are 1–999, got {dataset_id}")
    return f"Dataset{dataset_id:03d}_{name}"


def write_nnunet_dataset(
    cases: list[tuple[str, Volume, LabelMap]],
    raw_dir: str | os.PathLike,
    dataset_id: int,
    name: str = "Vertebrae",
    levels: list[str] | None = None,
) -> Path:
    """Write imagesTr/, labelsTr/ and dataset.json under ``raw_dir/DatasetXXX_name``.

    Args:
        cases: (case id, CT volume, vertebra LabelMap on the same grid).
        levels: the levels to learn (default: every level in any case), in cranio-caudal order.
    Returns:
        The dataset folder.
    """
    if not cases:
        raise InputError("no cases to write")
    all_levels = sorted({lvl for _, _, lab in cases for lvl in lab.labels}, key=level_rank)
    levels = sorted(levels or all_levels, key=level_rank)
    train_ids = {lvl: i + 1 for i, lvl in enumerate(levels)}
    folder = Path(raw_dir) / dataset_folder_name(dataset_id, name)
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    for case_id, volume, labels in cases:
        if not labels.geometry.matches(volume.geometry):
            raise InputError(f"case {case_id}: labels and scan grids differ", labels.source)
        canon, _ = canonicalize(volume)
        canon_labels, _ = canonicalize(labels)
        out = np.zeros(canon_labels.shape, np.uint8)
        for lvl, vid in canon_labels.labels.items():
            if lvl in train_ids:
                out[canon_labels.array == vid] = train_ids[lvl]
        write_volume(canon, folder / "imagesTr" / f"{case_id}_0000.nii.gz")
        write_volume(canon_labels.with_array(out), folder / "labelsTr" / f"{case_id}.nii.gz")
    dataset = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, **{f"vertebrae_{lvl}": i for lvl, i in train_ids.items()}},
        "numTraining": len(cases),
        "file_ending": ".nii.gz",
        "overwrite_image_reader_writer": "SimpleITKIO",
        "volbmd": {"frame": "LPS canonical (volbmd.geometry.canonicalize)"},
    }
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    return folder

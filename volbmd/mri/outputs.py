"""What `volbmd mri separate` and `volbmd mri pdff` write: the maps as NIfTI on the input grid and a
report.json (modality MR), into a fresh folder swapped in whole (as `volbmd run` does)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from volbmd.mri.levels import LevelPdff
from volbmd.volume import Volume

__all__ = ["MriReport", "write_mri_outputs", "MAP_FILES"]

#: The maps of a separation, by file name.
MAP_FILES = {
    "pdff.nii.gz": "pdff_percent",
    "water.nii.gz": "water",
    "fat.nii.gz": "fat",
    "r2star.nii.gz": "r2star_per_s",
    "fieldmap.nii.gz": "fieldmap_hz",
}


class MriReport(BaseModel):
    """report.json of an MRI run."""

    volbmd_version: str
    modality: str = "MR"
    kind: str = Field(description="fat_water_separation | dixon_pdff")
    input: dict[str, object] = Field(description="file names (never folder paths) and acquisition")
    method: dict[str, object] = Field(description="spectrum, grids, regularisation, noise σ")
    levels: list[LevelPdff] = []
    challenge_score: float | None = Field(
        None, description="ISMRM 2012 score against the file's reference: share of eval-mask voxels with |FF − ref| < 0.1"
    )
    warnings: list[str] = []
    timings_s: dict[str, float] = {}
    outputs: list[str] = []


def write_mri_outputs(out_dir: str | os.PathLike, maps: dict[str, Volume], report: MriReport) -> dict[str, Path]:
    """Write ``maps`` (file name → volume) and report.json into ``out_dir`` (replaced whole at the
    end); returns the files written."""
    from volbmd.io import atomic_output, write_volume
    from volbmd.io.output_folder import RUN_MARKER, fresh_output_folder

    out_dir = Path(out_dir)
    names = sorted([*maps, "report.json"])
    report = report.model_copy(update={"outputs": names})
    with fresh_output_folder(out_dir) as folder:
        for name, volume in maps.items():
            write_volume(volume.with_array(np.asarray(volume.array, np.float32)), folder / name)
        with atomic_output(folder / "report.json") as tmp:
            tmp.write_text(json.dumps(report.model_dump(mode="json", exclude_none=True), indent=2, allow_nan=False))
        with atomic_output(folder / RUN_MARKER) as tmp:
            tmp.write_text(json.dumps({"scan": None, "kind": report.kind}))
    return {name: out_dir / name for name in names}

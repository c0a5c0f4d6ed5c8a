"""NIfTI, NRRD and MetaImage through SimpleITK."""

from __future__ import annotations

import os
from pathlib import Path

import SimpleITK as sitk

from volbmd.errors import InputError
from volbmd.io._atomic import atomic_output, full_suffix
from volbmd.io.header_checks import MAX_PACKING_RATIO, check_detached_header, check_nifti
from volbmd.io.sitk_convert import from_sitk, to_sitk
from volbmd.volume import Volume

__all__ = ["read_itk_file", "write_itk_file", "ITK_SUFFIXES"]

ITK_SUFFIXES = {
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".mha": "metaimage",
    ".mhd": "metaimage",
}


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError("file not found", path)
    if not path.is_file():
        raise InputError("not a file", path)
    if not os.access(path, os.R_OK):
        raise InputError("cannot read file (permission denied)", path)
    if path.stat().st_size == 0:
        raise InputError("file is empty", path)
    if full_suffix(path).lower() in (".nii", ".nii.gz"):
        check_nifti(path)
    else:
        check_detached_header(path)


def _check_declared_size(path: Path, reader: sitk.ImageFileReader, size) -> None:
    if full_suffix(path).lower() not in (".nrrd", ".mha"):  # NIfTI is checked before; .nhdr/.mhd hold no data
        return
    voxels = 1
    for n in size:
        voxels *= int(n)
    pixel = sitk.Image([1] * reader.GetDimension(), reader.GetPixelID())
    declared = voxels * pixel.GetSizeOfPixelComponent() * reader.GetNumberOfComponents()
    if declared > MAX_PACKING_RATIO * path.stat().st_size:
        raise InputError(
            f"header declares an image of {tuple(size)} voxels ({declared / 1e6:.0f} MB) that a "
            f"{path.stat().st_size}-byte file cannot hold: damaged header or truncated file",
            path,
        )


def read_itk_file(path: str | os.PathLike) -> Volume:
    path = Path(path)
    _check_file(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()  # the header first: a huge 4D file is refused before loading
        size = reader.GetSize()
        if reader.GetDimension() == 4 and size[3] > 1:
            raise InputError(f"image is 4D (size x,y,z,t = {tuple(size)}); a 3D volume is needed", path)
        _check_declared_size(path, reader, size)
        spacing = reader.GetSpacing()
        if any(s <= 0 for s in spacing):
            raise InputError(f"spacing must be positive, got {tuple(spacing)} mm (x,y,z)", path)
        image = reader.Execute()
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = next((line for line in first if "ERROR" in line or "Unable" in line or "Could not" in line), "")
        detail = detail.split("):", 1)[-1].strip() if detail else "format not recognised"
        kind = ITK_SUFFIXES.get(full_suffix(path).lower(), "image")
        raise InputError(f"cannot read as {kind} ({detail})", path) from None
    if image.GetDimension() == 4:  # a 4D file with one time point: take the 3D volume
        image = image[:, :, :, 0]
    meta = {"format": ITK_SUFFIXES.get(full_suffix(path).lower(), "itk")}
    return from_sitk(image, source=path, metadata=meta)


def write_itk_file(volume: Volume, path: str | os.PathLike, *, compress: bool = True, compression_level: int = -1) -> Path:
    """Write atomically (temporary name, then rename). The format follows the suffix.

    ``compression_level`` 1 is fast (label maps compress well anyway); -1 is the library default.
    """
    path = Path(path)
    image = to_sitk(volume)
    with atomic_output(path) as tmp:
        sitk.WriteImage(image, str(tmp), compress, compression_level)
    return path

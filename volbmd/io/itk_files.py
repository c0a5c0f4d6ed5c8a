"""NIfTI, NRRD and MetaImage through SimpleITK."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import SimpleITK as sitk

from volbmd.errors import InputError
from volbmd.io._atomic import atomic_output, full_suffix
from volbmd.io.sitk_convert import from_sitk, to_sitk
from volbmd.volume import Volume

__all__ = ["read_itk_file", "write_itk_file", "ITK_SUFFIXES"]

ITK_SUFFIXES = {".nii": "nifti", ".nii.gz": "nifti", ".nrrd": "nrrd", ".nhdr": "nrrd", ".mha": "metaimage", ".mhd": "metaimage"}
_GZIP_MAGIC = b"\x1f\x8b"


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError("file not found", path)
    if not path.is_file():
        raise InputError("not a file", path)
    if not os.access(path, os.R_OK):
        raise InputError("cannot read file (permission denied)", path)
    if path.stat().st_size == 0:
        raise InputError("file is empty", path)
    if full_suffix(path).lower() == ".nii.gz":
        with open(path, "rb") as fh:
            if fh.read(2) != _GZIP_MAGIC:
                raise InputError("named .nii.gz but is not gzip-compressed", path)
        _check_gzip_complete(path)


def _nifti_expected_bytes(path: Path) -> int | None:
    """Uncompressed size a .nii.gz must have: vox_offset + voxels × bytes (None if unknown)."""
    import gzip
    import struct

    try:
        with gzip.open(path, "rb") as fh:
            head = fh.read(540)
    except (OSError, EOFError):
        return None
    if len(head) < 348:
        return None
    for endian in ("<", ">"):
        if struct.unpack(endian + "i", head[:4])[0] == 348:  # NIfTI-1
            dims = struct.unpack(endian + "8h", head[40:56])
            bitpix = struct.unpack(endian + "h", head[72:74])[0]
            offset = int(struct.unpack(endian + "f", head[108:112])[0])
            break
        if struct.unpack(endian + "i", head[:4])[0] == 540:  # NIfTI-2
            dims = struct.unpack(endian + "8q", head[16:80])
            bitpix = struct.unpack(endian + "h", head[14:16])[0]
            offset = int(struct.unpack(endian + "q", head[168:176])[0])
            break
    else:
        return None
    n = 1
    for d in dims[1 : 1 + max(0, min(int(dims[0]), 7))]:
        n *= max(int(d), 1)
    return offset + n * bitpix // 8


def _check_gzip_complete(path: Path, chunk_bytes: int = 1 << 22) -> None:
    """Catch truncated or corrupt .nii.gz files (ITK reads a truncated one without complaint).

    Fast path: the gzip trailer's stored length equals the size the NIfTI header implies. Otherwise
    decompress as a stream (nothing kept) to find out.
    """
    expected = _nifti_expected_bytes(path)
    if expected is not None and path.stat().st_size >= 18:
        with open(path, "rb") as fh:
            fh.seek(-4, os.SEEK_END)
            stored = int.from_bytes(fh.read(4), "little")
        if stored == expected % (1 << 32):
            return
    decomp = zlib.decompressobj(wbits=31)
    with open(path, "rb") as fh:
        try:
            while chunk := fh.read(chunk_bytes):
                decomp.decompress(chunk, 0)
                while decomp.unconsumed_tail:
                    decomp.decompress(decomp.unconsumed_tail, 0)
                if decomp.eof:
                    break
        except zlib.error as exc:
            raise InputError(f"corrupt gzip data ({exc})", path) from None
    if not decomp.eof:
        raise InputError("truncated file: gzip stream ends early", path)


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

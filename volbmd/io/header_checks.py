"""Checks of a file's header against its data, made before ITK reads it.

ITK reads some damaged files without complaint: a NIfTI file whose voxel data is cut short, a zero
``pixdim`` (read as 1 mm), NaN or infinite voxels (read as 0), a header that declares a huge image
over a tiny file (allocated before the read fails). Each of these would give a confident wrong
number, so they are refused here with the file and the problem named.
"""

from __future__ import annotations

import gzip
import os
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from volbmd.errors import InputError
from volbmd.io._atomic import full_suffix

__all__ = ["MAX_PACKING_RATIO", "NiftiHeader", "read_nifti_header", "check_nifti", "check_detached_header"]

#: No compression packs voxels more densely than about 1032:1 (deflate's limit): a header declaring
#: more voxel bytes than this many times its file's size is damaged (and allocating it could exhaust
#: the memory).
MAX_PACKING_RATIO = 1100
_GZIP_MAGIC = b"\x1f\x8b"

#: NIfTI datatype code → numpy dtype (the codes ITK and volbmd read).
_NIFTI_DTYPES = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2", 768: "u4", 1024: "i8", 1280: "u8"}


@dataclass(frozen=True)
class NiftiHeader:
    dims: tuple[int, ...]  # sizes of the used dimensions (x, y, z, ...)
    pixdim: tuple[float, ...]  # voxel sizes of the used dimensions
    datatype: int
    bitpix: int
    vox_offset: int
    endian: str  # "<" or ">"

    @property
    def voxel_bytes(self) -> int:
        n = 1
        for d in self.dims:
            n *= d
        return n * self.bitpix // 8

    @property
    def numpy_dtype(self) -> np.dtype | None:
        code = _NIFTI_DTYPES.get(self.datatype)
        return None if code is None else np.dtype(self.endian + code)


def _open(path: Path):
    return gzip.open(path, "rb") if full_suffix(path).lower() == ".nii.gz" else open(path, "rb")


def read_nifti_header(path: Path) -> NiftiHeader | None:
    """The header's sizes and layout, or None when the file does not start with a NIfTI-1/2 header
    (ITK then names the problem)."""
    try:
        with _open(path) as fh:
            head = fh.read(540)
    except (OSError, EOFError, zlib.error):
        return None
    if len(head) < 348:
        return None
    for endian in ("<", ">"):
        size = struct.unpack(endian + "i", head[:4])[0]
        if size == 348:
            dim = struct.unpack(endian + "8h", head[40:56])
            datatype, bitpix = struct.unpack(endian + "2h", head[70:74])
            pixdim = struct.unpack(endian + "8f", head[76:108])
            offset = int(struct.unpack(endian + "f", head[108:112])[0])
            break
        if size == 540 and len(head) >= 540:
            dim = struct.unpack(endian + "8q", head[16:80])
            datatype, bitpix = struct.unpack(endian + "2h", head[12:16])
            pixdim = struct.unpack(endian + "8d", head[104:168])
            offset = int(struct.unpack(endian + "q", head[168:176])[0])
            break
    else:
        return None
    n_dims = max(0, min(int(dim[0]), 7))
    dims = tuple(int(d) for d in dim[1 : 1 + n_dims])
    return NiftiHeader(
        dims,
        tuple(float(p) for p in pixdim[1 : 1 + n_dims]),
        int(datatype),
        int(bitpix),
        max(offset, 348 if size == 348 else 540),
        endian,
    )


def _stored_bytes_gz(path: Path, chunk_bytes: int = 1 << 22) -> int:
    """Uncompressed length of a gzip file, by streaming it (nothing kept); errors name the damage."""
    decomp = zlib.decompressobj(wbits=31)
    total = 0
    with open(path, "rb") as fh:
        try:
            while chunk := fh.read(chunk_bytes):
                total += len(decomp.decompress(chunk, chunk_bytes))
                while decomp.unconsumed_tail:
                    total += len(decomp.decompress(decomp.unconsumed_tail, chunk_bytes))
                if decomp.eof:
                    break
        except zlib.error as exc:
            raise InputError(f"corrupt gzip data ({exc})", path) from None
    if not decomp.eof:
        raise InputError("truncated file: gzip stream ends early", path)
    return total


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n} bytes"


def check_nifti(path: Path) -> None:
    """Refuse a NIfTI file whose header and data disagree, whose spacing is zero, or whose float
    voxels are not all finite."""
    gz = full_suffix(path).lower() == ".nii.gz"
    if gz:
        with open(path, "rb") as fh:
            if fh.read(2) != _GZIP_MAGIC:
                raise InputError("named .nii.gz but is not gzip-compressed", path)
    header = read_nifti_header(path)
    if header is None:
        if gz:
            _stored_bytes_gz(path)  # a damaged stream is the better message
        return
    if any(d < 1 for d in header.dims[:3]):
        raise InputError(f"header declares an empty image (dim = {header.dims})", path)
    spatial = header.pixdim[:3]
    if len(spatial) == 3 and any(not np.isfinite(p) or p == 0 for p in spatial):
        raise InputError(f"header gives a zero or invalid voxel size (pixdim x,y,z = {tuple(spatial)} mm)", path)
    expected = header.vox_offset + header.voxel_bytes
    file_bytes = path.stat().st_size
    if gz:
        if header.voxel_bytes > MAX_PACKING_RATIO * file_bytes:
            raise InputError(
                f"header declares {_mb(header.voxel_bytes)} of voxels (size {header.dims}) but the "
                f"compressed file is only {_mb(file_bytes)}: damaged header or truncated file",
                path,
            )
        with open(path, "rb") as fh:  # fast path: the gzip trailer's stored length (mod 2^32)
            fh.seek(-4, os.SEEK_END)
            trailer = int.from_bytes(fh.read(4), "little")
        stored = expected if trailer == expected % (1 << 32) else _stored_bytes_gz(path)
    else:
        stored = file_bytes
    if stored < expected:
        raise InputError(
            f"truncated file: header declares {_mb(header.voxel_bytes)} of voxels (size {header.dims}) "
            f"but the file holds {_mb(max(stored - header.vox_offset, 0))}",
            path,
        )
    dtype = header.numpy_dtype
    if dtype is not None and dtype.kind == "f":
        _check_finite_nifti(path, header, dtype)


def _check_finite_nifti(path: Path, header: NiftiHeader, dtype: np.dtype, chunk_voxels: int = 1 << 22) -> None:
    """ITK turns NaN and infinite voxels of a NIfTI file into 0: read the raw voxels to find them."""
    n_voxels = header.voxel_bytes // dtype.itemsize
    bad = 0
    with _open(path) as fh:
        fh.seek(header.vox_offset)
        remaining = n_voxels
        while remaining > 0:
            count = min(chunk_voxels, remaining)
            data = np.frombuffer(fh.read(count * dtype.itemsize), dtype=dtype)
            bad += int(data.size - np.count_nonzero(np.isfinite(data)))
            remaining -= count
    if bad:
        raise InputError(f"{bad} voxels are NaN or infinite (a reader would silently turn them into 0)", path)


_DETACHED_KEYS = {
    ".mhd": re.compile(r"^\s*ElementDataFile\s*=\s*(.+?)\s*$", re.MULTILINE),
    ".nhdr": re.compile(r"^\s*data\s?file\s*:\s*(.+?)\s*$", re.MULTILINE | re.IGNORECASE),
}


def check_detached_header(path: Path) -> None:
    """A MetaImage (.mhd) or NRRD (.nhdr) header whose data file is missing: name that file."""
    pattern = _DETACHED_KEYS.get(full_suffix(path).lower())
    if pattern is None:
        return
    try:
        text = path.read_bytes()[:65536].decode("latin-1")
    except OSError:
        return
    match = pattern.search(text)
    if match is None:
        return
    name = match.group(1).strip()
    if name.upper() in ("LOCAL",) or name.upper().startswith("LIST") or "%" in name or " " in name:
        return  # data in the header file itself, or a list / pattern of files ITK expands
    data = (path.parent / name) if not Path(name).is_absolute() else Path(name)
    if not data.is_file():
        raise InputError(f"the header names its voxel data '{name}', which is missing beside it", path)
    if data.stat().st_size == 0:
        raise InputError(f"the voxel data file '{name}' is empty", path)

"""Lossless conversion between volbmd volumes and in-memory SimpleITK / itk images."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from volbmd.errors import InputError
from volbmd.types import SpacingLike
from volbmd.volume import LabelMap, Volume

__all__ = ["to_sitk", "from_sitk", "to_itk", "from_itk", "from_numpy"]


def _check_image(dimension: int, components: int, size, source) -> None:
    if components != 1:
        raise InputError(f"image has {components} components per voxel; a scalar image is needed", source)
    if dimension == 2:
        raise InputError(f"image is 2D (size {tuple(size)}); a 3D volume is needed", source)
    if dimension == 4:
        raise InputError(f"image is 4D (size x,y,z,t = {tuple(size)}); a 3D volume is needed", source)
    if dimension != 3:
        raise InputError(f"image is {dimension}D; a 3D volume is needed", source)


class _ImageVoxels:
    """The voxel buffer of a SimpleITK image as a writable numpy array without a copy: the array's
    ``base`` is this object, which keeps the image (the buffer's owner) alive. A copy of a large CT
    costs a few tenths of a second, most of it page faults on fresh memory."""

    def __init__(self, image: sitk.Image):
        self._image = image
        interface = dict(sitk.GetArrayViewFromImage(image).__array_interface__)
        interface["data"] = (interface["data"][0], False)  # the image is ours alone: writable
        self.__array_interface__ = interface


def from_sitk(image: sitk.Image, *, source=None, metadata=None, labels: dict[str, int] | None = None) -> Volume:
    """SimpleITK image → :class:`Volume` (or :class:`LabelMap` when ``labels`` is given). The
    volume takes over the image's voxels (no copy): do not change ``image`` afterwards."""
    _check_image(image.GetDimension(), image.GetNumberOfComponentsPerPixel(), image.GetSize(), source)
    array = np.asarray(_ImageVoxels(image))
    kwargs = dict(
        array=array,
        spacing_mm=tuple(image.GetSpacing())[::-1],
        origin_lps_mm=tuple(image.GetOrigin()),
        direction_lps=np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3),
        metadata=dict(metadata or {}),
        source=None if source is None else str(source),
    )
    if labels is not None:
        return LabelMap(labels=labels, **kwargs)
    return Volume(**kwargs)


def to_sitk(volume: Volume) -> sitk.Image:
    """:class:`Volume` → SimpleITK image with the same voxels, dtype and geometry."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.array))
    image.SetSpacing(tuple(float(s) for s in volume.spacing_mm[::-1]))
    image.SetOrigin(tuple(float(v) for v in volume.origin_lps_mm))
    image.SetDirection(tuple(float(v) for v in np.asarray(volume.direction_lps).ravel()))
    return image


def to_itk(volume: Volume):
    """:class:`Volume` → itk.Image (itk is imported here: its first use takes seconds)."""
    import itk

    image = itk.image_from_array(np.ascontiguousarray(volume.array))
    image.SetSpacing([float(s) for s in volume.spacing_mm[::-1]])
    image.SetOrigin([float(v) for v in volume.origin_lps_mm])
    image.SetDirection(itk.matrix_from_array(np.asarray(volume.direction_lps, dtype=np.float64)))
    return image


def from_itk(image, *, source=None, metadata=None, labels: dict[str, int] | None = None) -> Volume:
    """itk.Image → :class:`Volume` (a copy of the voxels)."""
    import itk

    dim = image.GetImageDimension()
    ncomp = image.GetNumberOfComponentsPerPixel()
    _check_image(dim, ncomp, tuple(image.GetLargestPossibleRegion().GetSize()), source)
    kwargs = dict(
        array=np.array(itk.array_view_from_image(image), copy=True),
        spacing_mm=tuple(float(s) for s in image.GetSpacing())[::-1],
        origin_lps_mm=tuple(float(v) for v in image.GetOrigin()),
        direction_lps=np.asarray(itk.array_from_matrix(image.GetDirection()), dtype=np.float64),
        metadata=dict(metadata or {}),
        source=None if source is None else str(source),
    )
    if labels is not None:
        return LabelMap(labels=labels, **kwargs)
    return Volume(**kwargs)


def from_numpy(
    array: np.ndarray, spacing_mm: SpacingLike, origin_lps_mm=(0.0, 0.0, 0.0), direction_lps=None, **kwargs
) -> Volume:
    """A (z, y, x) numpy array with its spacing (z, y, x) in mm → :class:`Volume`."""
    return Volume(
        array=np.asarray(array),
        spacing_mm=spacing_mm,
        origin_lps_mm=origin_lps_mm,
        direction_lps=np.eye(3) if direction_lps is None else direction_lps,
        **kwargs,
    )

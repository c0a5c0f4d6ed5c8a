"""Volume validation: bad arrays and geometry fail with clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from volbmd.errors import InputError
from volbmd.volume import LabelMap, Volume


def test_rejects_2d_4d_and_single_slice():
    with pytest.raises(InputError, match="3D"):
        Volume(array=np.zeros((4, 4)), spacing_mm=(1, 1, 1))
    with pytest.raises(InputError, match="4D"):
        Volume(array=np.zeros((2, 4, 4, 4)), spacing_mm=(1, 1, 1))
    with pytest.raises(InputError, match="2D"):
        Volume(array=np.zeros((1, 4, 4)), spacing_mm=(1, 1, 1))


@pytest.mark.parametrize("spacing", [(0, 1, 1), (1, -1, 1), (1, 1, 1000), (1e-5, 1, 1), (np.nan, 1, 1)])
def test_rejects_bad_spacing(spacing):
    with pytest.raises(InputError, match="spacing"):
        Volume(array=np.zeros((3, 3, 3)), spacing_mm=spacing)


def test_rejects_nan_and_inf():
    arr = np.zeros((3, 3, 3), np.float32)
    arr[1, 1, 1] = np.nan
    arr[0, 0, 0] = np.inf
    with pytest.raises(InputError, match="2 voxels are NaN or infinite"):
        Volume(array=arr, spacing_mm=(1, 1, 1), source="scan.nii")


def test_rejects_sheared_direction():
    with pytest.raises(InputError, match="orthonormal"):
        Volume(array=np.zeros((3, 3, 3)), spacing_mm=(1, 1, 1), direction_lps=[[1, 0.3, 0], [0, 1, 0], [0, 0, 1]])


def test_label_map_rejects_fractional_labels():
    with pytest.raises(InputError, match="non-integer"):
        LabelMap(array=np.full((3, 3, 3), 0.5), spacing_mm=(1, 1, 1))


def test_index_to_world_uses_spacing_in_array_order():
    vol = Volume(array=np.zeros((3, 4, 5), np.int16), spacing_mm=(3.0, 2.0, 0.5), origin_lps_mm=(10, 20, 30))
    assert np.allclose(vol.geometry.index_to_world([1, 1, 1]), [10.5, 22.0, 33.0])


def test_grid_mismatch_names_what_differs():
    import pytest

    from volbmd.errors import GeometryError
    from volbmd.volume import Geometry, axis_codes

    g = Geometry(shape=(4, 5, 6), spacing_mm=(2.0, 0.5, 0.5))
    assert g.difference(g) is None
    g.require_match(g, "mask")
    cases = (
        (Geometry(shape=(4, 5, 7), spacing_mm=(2.0, 0.5, 0.5)), "size (7, 5, 4) (x,y,z) against (6, 5, 4)"),
        (Geometry(shape=(4, 5, 6), spacing_mm=(3.0, 0.5, 0.5)), "voxel size (0.5, 0.5, 3.0) mm (x,y,z) against"),
        (
            Geometry(shape=(4, 5, 6), spacing_mm=(2.0, 0.5, 0.5), direction_lps=((1, 0, 0), (0, -1, 0), (0, 0, 1))),
            "axes pointing LAS against LPS",
        ),
        (Geometry(shape=(4, 5, 6), spacing_mm=(2.0, 0.5, 0.5), origin_lps_mm=(3.0, 4.0, 0.0)), "origin 5.0 mm away"),
    )
    for other, words in cases:
        assert words in other.difference(g)
        with pytest.raises(GeometryError, match="rod mask grid does not match the scan grid: "):
            other.require_match(g, "rod mask", "rods.nii.gz")
    assert axis_codes(((-1, 0, 0), (0, 0, 1), (0, -1, 0))) == "RIP"  # columns are the axes x, y, z

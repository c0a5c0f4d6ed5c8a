"""Readers and writers: formats, round trips, DICOM series handling, and bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from dicom_factory import write_ct_series

from volbmd.errors import GeometryError, InputError
from volbmd.geometry import canonicalize
from volbmd.io import load_label_map, load_volume, write_labels, write_volume
from volbmd.io.sitk_convert import from_itk, from_numpy, from_sitk, to_itk, to_sitk
from volbmd.volume import LabelMap, Volume

RAS = np.diag([-1.0, -1.0, 1.0])


def _volume(dtype=np.int16, direction=RAS) -> Volume:
    rng = np.random.default_rng(1)
    arr = rng.integers(-1000, 1500, size=(7, 9, 11)).astype(dtype)
    return Volume(array=arr, spacing_mm=(3.0, 0.75, 0.8), origin_lps_mm=(12.5, -30.25, 400.0), direction_lps=direction)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha", ".ome.zarr"])
@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.float32, np.uint8])
def test_round_trip_formats(tmp_path, suffix, dtype):
    vol = _volume(dtype if dtype != np.uint8 else np.int16)
    if dtype == np.uint8:
        vol = vol.with_array(np.abs(vol.array % 200).astype(np.uint8))
    path = write_volume(vol, tmp_path / f"scan{suffix}")
    back = load_volume(path)
    assert back.array.dtype == vol.array.dtype
    assert np.array_equal(back.array, vol.array)
    assert back.geometry.matches(vol.geometry, atol=1e-4)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_ome_zarr_is_valid_ngff_and_keeps_labels(tmp_path):
    import zarr

    labels = LabelMap(
        array=(np.arange(7 * 9 * 11).reshape(7, 9, 11) % 3).astype(np.int32),
        spacing_mm=(3, 0.75, 0.8),
        labels={"L1": 1, "L2": 2},
    )
    path = write_volume(labels, tmp_path / "labels.ome.zarr")
    root = zarr.open_group(str(path), mode="r")
    ms = root.attrs["ome"]["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["z", "y", "x"]
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [3.0, 0.75, 0.8]
    assert root["0"].shape == (7, 9, 11)
    back = load_volume(path)
    assert isinstance(back, LabelMap) and back.labels == {"L1": 1, "L2": 2}


def test_overwrite_zarr_replaces_old_content(tmp_path):
    a, b = _volume(), _volume().with_array(np.zeros((7, 9, 11), np.int16))
    write_volume(a, tmp_path / "v.zarr")
    write_volume(b, tmp_path / "v.zarr")
    assert np.array_equal(load_volume(tmp_path / "v.zarr").array, b.array)


def test_sitk_itk_numpy_conversions_are_lossless():
    vol = _volume(np.int16, direction=np.array([[0, 0, 1.0], [-1.0, 0, 0], [0, -1.0, 0]]))
    s = to_sitk(vol)
    assert s.GetSize() == (11, 9, 7) and s.GetSpacing() == (0.8, 0.75, 3.0)
    back = from_sitk(s)
    assert np.array_equal(back.array, vol.array) and back.geometry == vol.geometry
    back_itk = from_itk(to_itk(vol))
    assert np.array_equal(back_itk.array, vol.array) and back_itk.geometry.matches(vol.geometry, atol=1e-12)
    np_vol = from_numpy(vol.array, vol.spacing_mm)
    assert np_vol.spacing_mm == (3.0, 0.75, 0.8) and np.array_equal(np_vol.array, vol.array)


def test_labels_written_on_source_grid_from_canonical(tmp_path):
    vol = _volume()
    canon, reo = canonicalize(vol)
    labels_canon = LabelMap.on_grid_of(canon, (canon.array > 0).astype(np.uint8), {"L1": 1})
    path = write_labels(labels_canon, tmp_path / "labels.nii.gz", source=vol, reorientation=reo)
    back = load_volume(path)
    assert back.geometry.matches(vol.geometry)
    assert np.array_equal(back.array, (vol.array > 0).astype(np.uint8))
    other = LabelMap(array=np.zeros((3, 3, 3), np.uint8), spacing_mm=(1, 1, 1))
    with pytest.raises(GeometryError, match="does not match"):
        write_labels(other, tmp_path / "bad.nii.gz", source=vol)
    assert not (tmp_path / "bad.nii.gz").exists()


# ----------------------------------------------------------------------------- DICOM


def _hu(shape=(6, 8, 10), seed=0):
    return np.random.default_rng(seed).integers(-1000, 2000, size=shape).astype(np.int16)


def test_dicom_slices_ordered_by_position_not_name(tmp_path):
    hu = _hu()
    names = [f"IM{n:03d}" for n in (5, 2, 9, 1, 7, 3)]  # file name order ≠ position order
    write_ct_series(tmp_path, hu, names=names)
    vol = load_volume(tmp_path)
    assert np.array_equal(vol.array, hu)
    assert vol.spacing_mm == pytest.approx((2.0, 0.7, 0.6))
    assert vol.origin_lps_mm == pytest.approx((-10.0, -20.0, 100.0))
    assert vol.metadata["kvp"] == 120.0 and vol.metadata["convolution_kernel"] == "B30f"
    assert vol.metadata["phi"]["patient_name"] == "Doe^Jane"


def test_dicom_rescale_applied_including_fractional_slope(tmp_path):
    hu = _hu().astype(np.float32)
    write_ct_series(tmp_path, hu, slope=0.5, intercept=-1024)
    vol = load_volume(tmp_path)
    assert vol.array.dtype.kind == "f"
    assert np.array_equal(vol.array, hu)


def test_dicom_descending_positions_and_sagittal(tmp_path):
    hu = _hu((5, 6, 7))
    # sagittal: rows run along -y (anterior), columns along -z; normal = +x
    write_ct_series(tmp_path, hu, orientation=(0, 1, 0, 0, 0, -1), spacing_mm=(1.5, 0.8, 0.9))
    vol = load_volume(tmp_path)
    assert np.array_equal(vol.array, hu)
    canon, _ = canonicalize(vol)
    assert canon.shape == (6, 7, 5)


def test_dicom_picks_series_and_refuses_mixed_orientations(tmp_path):
    write_ct_series(tmp_path / "a", _hu((6, 8, 10)), series_uid="1.2.3.1")
    write_ct_series(tmp_path / "b", _hu((4, 8, 10), 1), series_uid="1.2.3.2")
    both = tmp_path / "both"
    shutil.copytree(tmp_path / "a", both)
    for p in (tmp_path / "b").iterdir():
        shutil.copy(p, both / f"b_{p.name}")
    vol = load_volume(both)
    assert vol.shape == (6, 8, 10) and "2 series" in vol.metadata["warnings"][0]
    assert load_volume(both, series_uid="1.2.3.2").shape == (4, 8, 10)
    with pytest.raises(InputError, match="1.2.3.9 not found"):
        load_volume(both, series_uid="1.2.3.9")

    write_ct_series(tmp_path / "c", _hu((4, 8, 10), 2), series_uid="1.2.3.3", orientation=(0, 1, 0, 0, 0, -1))
    for p in (tmp_path / "c").iterdir():
        shutil.copy(p, both / f"c_{p.name}")
    with pytest.raises(InputError, match="different orientations.*--series"):
        load_volume(both)
    assert load_volume(both, series_uid="1.2.3.3").shape == (4, 8, 10)


def test_dicom_missing_slice(tmp_path):
    paths = write_ct_series(tmp_path, _hu((8, 4, 4)))
    paths[4].unlink()
    with pytest.raises(InputError, match="missing slice"):
        load_volume(tmp_path)


def test_dicom_uneven_spacing(tmp_path):
    z = [0, 2, 4, 6.6, 8.6, 10.6]
    write_ct_series(tmp_path, _hu((6, 4, 4)), positions=[(0, 0, v) for v in z])
    with pytest.raises(InputError, match="uneven slice spacing"):
        load_volume(tmp_path)


def test_dicom_gantry_tilt(tmp_path):
    positions = [(0, k * 2 * np.tan(np.radians(15)), k * 2.0) for k in range(6)]
    write_ct_series(tmp_path, _hu((6, 4, 4)), positions=positions)
    with pytest.raises(InputError, match="gantry tilt of 15.0°"):
        load_volume(tmp_path)


def test_dicom_duplicate_positions(tmp_path):
    write_ct_series(tmp_path, _hu((4, 4, 4)), positions=[(0, 0, 0), (0, 0, 2), (0, 0, 2), (0, 0, 4)])
    with pytest.raises(InputError, match="same position"):
        load_volume(tmp_path)


def test_dicom_truncated_file_is_named(tmp_path):
    paths = write_ct_series(tmp_path, _hu((5, 16, 16)))
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[: len(data) - 200])
    with pytest.raises(InputError, match="truncated") as err:
        load_volume(tmp_path)
    assert paths[2].name in str(err.value)


def test_folder_without_dicom(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="no DICOM image files"):
        load_volume(tmp_path)


# ----------------------------------------------------------------------------- bad files


def test_nii_gz_that_is_not_gzip(tmp_path):
    path = tmp_path / "scan.nii.gz"
    sitk.WriteImage(to_sitk(_volume()), str(tmp_path / "plain.nii"))
    shutil.copy(tmp_path / "plain.nii", path)
    with pytest.raises(InputError, match="not gzip"):
        load_volume(path)


def test_garbage_file(tmp_path):
    path = tmp_path / "scan.mha"
    path.write_bytes(b"this is not an image" * 10)
    with pytest.raises(InputError, match="cannot read as metaimage"):
        load_volume(path)


def test_truncated_gzip_nifti(tmp_path):
    write_volume(_volume(), tmp_path / "ok.nii.gz")
    data = (tmp_path / "ok.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.nii.gz"):
        load_volume(tmp_path / "cut.nii.gz")


def _write_mha(path: Path, dims: str, spacing: str, data: bytes, ndims: int = 3, etype="MET_SHORT"):
    path.write_bytes(
        (
            f"ObjectType = Image\nNDims = {ndims}\nDimSize = {dims}\nElementSpacing = {spacing}\n"
            f"ElementType = {etype}\nElementDataFile = LOCAL\n"
        ).encode()
        + data
    )


def test_2d_and_4d_images(tmp_path):
    _write_mha(tmp_path / "flat.mha", "4 4", "1 1", np.zeros(16, np.int16).tobytes(), ndims=2)
    with pytest.raises(InputError, match="2D"):
        load_volume(tmp_path / "flat.mha")
    _write_mha(tmp_path / "t.mha", "4 4 4 3", "1 1 1 1", np.zeros(192, np.int16).tobytes(), ndims=4)
    with pytest.raises(InputError, match="4D"):
        load_volume(tmp_path / "t.mha")


def test_zero_and_negative_spacing(tmp_path):
    _write_mha(tmp_path / "zero.mha", "4 4 4", "1 1 0", np.zeros(64, np.int16).tobytes())
    with pytest.raises(InputError, match="spacing"):
        load_volume(tmp_path / "zero.mha")
    _write_mha(tmp_path / "neg.mha", "4 4 4", "1 -1 1", np.zeros(64, np.int16).tobytes())
    with pytest.raises(InputError, match="spacing"):
        load_volume(tmp_path / "neg.mha")


def test_nan_voxels(tmp_path):
    arr = np.zeros(64, np.float32)
    arr[5] = np.nan
    _write_mha(tmp_path / "nan.mha", "4 4 4", "1 1 1", arr.tobytes(), etype="MET_FLOAT")
    with pytest.raises(InputError, match="NaN"):
        load_volume(tmp_path / "nan.mha")


def test_unknown_suffix_and_missing(tmp_path):
    (tmp_path / "scan.xyz").write_text("x")
    with pytest.raises(InputError, match="unknown format"):
        load_volume(tmp_path / "scan.xyz")
    with pytest.raises(InputError, match="not found"):
        load_volume(tmp_path / "nothing.nii.gz")


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    import volbmd.io.itk_files as itk_files

    def broken(*args, **kwargs):
        Path(args[1]).write_bytes(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(itk_files.sitk, "WriteImage", broken)
    with pytest.raises(RuntimeError):
        write_volume(_volume(), tmp_path / "out.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_load_label_map_names_ids(tmp_path):
    vol = _volume().with_array((np.arange(7 * 9 * 11).reshape(7, 9, 11) % 3).astype(np.int16))
    write_volume(vol, tmp_path / "l.nii.gz")
    labels = load_label_map(tmp_path / "l.nii.gz", {"L1": 1})
    assert isinstance(labels, LabelMap) and labels.labels == {"L1": 1}


# ------------------------------------------------------- damaged but readable files (ITK reads them)


def _nifti_bytes(tmp_path, array=None, dtype=np.int16) -> bytes:
    arr = np.arange(6 * 7 * 8, dtype=dtype).reshape(6, 7, 8) if array is None else array
    image = sitk.GetImageFromArray(arr)  # SimpleITK writes NaN voxels as they are
    image.SetSpacing((1.0, 1.0, 2.0))
    sitk.WriteImage(image, str(tmp_path / "src.nii"))
    return (tmp_path / "src.nii").read_bytes()


def _gzip_to(path: Path, data: bytes) -> Path:
    import gzip

    path.write_bytes(gzip.compress(data))
    return path


def test_nifti_non_finite_voxels_are_refused_not_zeroed(tmp_path):
    for bad in (np.nan, np.inf, -np.inf):
        arr = np.zeros((6, 7, 8), np.float32)
        arr[2, 3, 4] = bad
        data = _nifti_bytes(tmp_path, arr)
        for path in ((tmp_path / "f.nii"), _gzip_to(tmp_path / "f.nii.gz", data)):
            if path.suffix == ".nii":
                path.write_bytes(data)
            with pytest.raises(InputError, match="1 voxels are NaN or infinite") as err:
                load_volume(path)
            assert err.value.source == str(path)


def test_nifti_zero_pixdim_is_refused_not_read_as_1mm(tmp_path):
    data = bytearray(_nifti_bytes(tmp_path))
    import struct

    struct.pack_into("<f", data, 76 + 4 * 3, 0.0)  # pixdim[3] (z) = 0
    (tmp_path / "z.nii").write_bytes(bytes(data))
    with pytest.raises(InputError, match="zero or invalid voxel size"):
        load_volume(tmp_path / "z.nii")


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_with_voxel_data_cut_short(tmp_path, suffix):
    data = _nifti_bytes(tmp_path)
    cut = data[: len(data) - 100]
    path = tmp_path / f"cut{suffix}"
    if suffix == ".nii":
        path.write_bytes(cut)
    else:
        _gzip_to(path, cut)  # a complete gzip stream of an incomplete file
    with pytest.raises(InputError, match="truncated file: header declares"):
        load_volume(path)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_header_declaring_a_huge_image_is_refused_before_allocating(tmp_path, suffix):
    import struct

    data = bytearray(_nifti_bytes(tmp_path))
    struct.pack_into("<8h", data, 40, 3, 30000, 30000, 30000, 1, 1, 1, 1)  # 54 TB of int16
    path = tmp_path / f"huge{suffix}"
    if suffix == ".nii":
        path.write_bytes(bytes(data))
    else:
        _gzip_to(path, bytes(data))
    with pytest.raises(InputError, match="header declares"):
        load_volume(path)


def test_metaimage_header_declaring_a_huge_image(tmp_path):
    _write_mha(tmp_path / "huge.mha", "30000 30000 30000", "1 1 1", np.zeros(64, np.int16).tobytes())
    with pytest.raises(InputError, match="cannot hold"):
        load_volume(tmp_path / "huge.mha")


def test_detached_headers_name_their_missing_data_file(tmp_path):
    (tmp_path / "scan.mhd").write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementType = MET_SHORT\n"
        "ElementSpacing = 1 1 1\nElementDataFile = scan.raw\n"
    )
    (tmp_path / "scan.nhdr").write_text(
        "NRRD0004\ntype: short\ndimension: 3\nsizes: 4 4 4\nspacings: 1 1 1\nencoding: raw\ndata file: voxels.raw\n"
    )
    with pytest.raises(InputError, match="'scan.raw', which is missing"):
        load_volume(tmp_path / "scan.mhd")
    with pytest.raises(InputError, match="'voxels.raw', which is missing"):
        load_volume(tmp_path / "scan.nhdr")
    np.zeros(64, np.int16).tofile(tmp_path / "scan.raw")  # with its data the same header reads
    assert load_volume(tmp_path / "scan.mhd").shape == (4, 4, 4)


def test_a_dicom_file_named_by_its_uid_is_recognised(tmp_path):
    write_ct_series(tmp_path / "series", np.zeros((3, 8, 8), np.int16))
    first = sorted((tmp_path / "series").iterdir())[0]
    named = tmp_path / "1.2.840.113619.2.55.3.604688119.969.1234567890.123"
    shutil.copy(first, named)
    with pytest.raises(InputError, match="single DICOM file"):
        load_volume(named)

"""Real scans from ../shared/data: grids, orientation and mask alignment."""

from __future__ import annotations

import numpy as np

from volbmd.geometry import canonicalize, orientation_code, uncanonicalize
from volbmd.io import load_volume


def test_chest_dicom_matches_reference_grid(shared_data):
    ct = load_volume(shared_data / "ts_chest_dicom" / "dicom")
    assert ct.shape[::-1] == (512, 512, 20)
    assert np.allclose(ct.spacing_mm, (2.0, 0.9765625, 0.9765625))
    assert ct.metadata["kvp"] == 120.0 and ct.metadata["modality"] == "CT"
    assert orientation_code(ct.direction_lps) == "LPS"
    ref = load_volume(shared_data / "ts_chest_dicom" / "reference_multilabel.nii.gz")
    assert orientation_code(ref.direction_lps) == "LAS"
    c_ct, reo_ct = canonicalize(ct)
    c_ref, reo_ref = canonicalize(ref)
    assert c_ct.geometry.matches(c_ref.geometry)
    # aligned: the T12 and T11 masks sit on bone, the mask's complement near them does not
    for label in (32, 33):
        assert c_ct.array[c_ref.array == label].mean() > 200
    assert np.array_equal(uncanonicalize(c_ct, reo_ct).array, ct.array)
    assert np.array_equal(uncanonicalize(c_ref, reo_ref).array, ref.array)


def test_abdomen_ras_nifti_lands_in_canonical_frame(shared_data):
    folder = shared_data / "ts_abdomen_ct"
    ct = load_volume(folder / "ct.nii.gz")
    labels = load_volume(folder / "vertebrae_multilabel.nii.gz")
    assert orientation_code(ct.direction_lps) == "RAS" and ct.array.dtype == np.int32
    c_ct, reo = canonicalize(ct)
    c_lab, reo_lab = canonicalize(labels)
    assert np.array_equal(c_ct.direction_lps, np.eye(3)) and c_ct.geometry.matches(c_lab.geometry)
    # superior is up axis 0: L1 (31) lies above L5 (27) in the canonical frame
    z_of = {lab: np.argwhere(c_lab.array == lab)[:, 0].mean() for lab in (27, 31)}
    assert z_of[31] > z_of[27]
    # masks sit on bone: L1–L5 mean HU well above soft tissue
    assert all(c_ct.array[c_lab.array == lab].mean() > 150 for lab in range(27, 32))
    back = uncanonicalize(c_lab, reo_lab)
    assert np.array_equal(back.array, labels.array) and back.geometry == labels.geometry
    assert np.array_equal(uncanonicalize(c_ct, reo).array, ct.array)

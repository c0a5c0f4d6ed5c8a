"""Slice-wise hole filling and label statistics against scipy's own per-slice and per-label versions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from volbmd.slicewise import fill_holes_slicewise, label_stats, patient_mask, slice_holes


def _per_slice_reference(mask):
    return np.stack([ndi.binary_fill_holes(sl) for sl in mask])


@pytest.mark.parametrize("seed, density", [(0, 0.3), (1, 0.5), (2, 0.7)])
def test_fill_holes_matches_scipy_per_slice(seed, density):
    rng = np.random.default_rng(seed)
    mask = ndi.binary_opening(rng.random((6, 40, 37)) < density)
    assert np.array_equal(fill_holes_slicewise(mask), _per_slice_reference(mask))


def test_fill_holes_edge_cases():
    empty = np.zeros((3, 5, 5), bool)
    assert not fill_holes_slicewise(empty).any()
    full = np.ones((3, 5, 5), bool)
    assert fill_holes_slicewise(full).all()
    ring = np.zeros((2, 7, 7), bool)
    ring[0, 1:6, 1:6] = True
    ring[0, 2:5, 2:5] = False  # a hole in slice 0 only
    ring[1, 0:3, 0:3] = True  # touching the border: nothing to fill
    out = fill_holes_slicewise(ring)
    assert out[0, 3, 3] and out[0, 2:5, 2:5].all()
    assert np.array_equal(out[1], ring[1])
    holes, n = slice_holes(ring)
    assert n == 1 and (holes > 0).sum() == 9
    # a hole never reaches through to the next slice: holes are per slice
    stack = np.zeros((3, 7, 7), bool)
    stack[:, 1:6, 1:6] = True
    stack[:, 3, 3] = False
    holes, n = slice_holes(stack)
    assert n == 3


def test_label_stats_match_scipy():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 5, (8, 9, 10))
    values = rng.normal(size=labels.shape)
    counts, centroid, mean = label_stats(labels, 4, values)
    index = np.arange(1, 5)
    assert np.allclose(counts[1:], ndi.sum(np.ones_like(values), labels, index))
    assert np.allclose(centroid[1:], np.asarray(ndi.center_of_mass(labels > 0, labels, index)))
    assert np.allclose(mean[1:], ndi.mean(values, labels, index))


def test_patient_mask_takes_the_largest_body_and_fills_it():
    hu = np.full((4, 30, 30), -1000.0)
    hu[:, 5:25, 5:25] = 40.0  # the patient
    hu[:, 10:15, 10:15] = -800.0  # a lung inside
    hu[:, 27:29, 2:28] = 200.0  # the table, apart
    m = patient_mask(hu, -500.0)
    assert m[:, 12, 12].all() and not m[:, 28, 10].any()
    assert not patient_mask(np.full((2, 4, 4), -1000.0), -500.0).any()

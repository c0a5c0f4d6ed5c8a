"""Every Numba kernel against its numpy/scipy reference, on random and edge-case inputs."""

from __future__ import annotations

import numpy as np
import pytest
import reference
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from volbmd_kernels.geodesic import geodesic_grow
from volbmd_kernels.morphology import CORE_TIE_RTOL, edt_squared_mm2, strip_cortex
from volbmd_kernels.stats import label_bboxes, masked_values, value_statistics

SPACINGS = [(1.0, 1.0, 1.0), (0.6, 0.6, 3.0), (3.0, 0.6, 0.6), (1.25, 0.7, 0.9), (2.0, 0.9765625, 0.9765625)]


def _core_agrees(mask, spacing, depth):
    got = strip_cortex(mask, spacing, depth)
    ref_d = np.sqrt(reference.edt_squared_mm2(mask, spacing))
    ref = ref_d > depth
    # voxels exactly at the depth (a tie) are excluded by both; allow nothing else to differ
    tie = np.abs(ref_d - depth) <= depth * CORE_TIE_RTOL * 10
    assert np.array_equal(got[~tie], ref[~tie])
    assert not got[tie].any()


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("seed", range(4))
def test_edt_matches_scipy_random(spacing, seed):
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(3, 25, 3))
    mask = ndi_smooth(rng.random(shape) < rng.uniform(0.4, 0.95))
    assert np.allclose(edt_squared_mm2(mask, spacing), reference.edt_squared_mm2(mask, spacing), rtol=1e-12, atol=1e-9)
    for depth in (0.0, 1.0, 2.5, 4.0):
        _core_agrees(mask, spacing, depth)


def ndi_smooth(mask):
    from scipy import ndimage as ndi

    return ndi.binary_closing(mask, iterations=1)


@settings(max_examples=60, deadline=None)
@given(
    mask=arrays(np.bool_, st.tuples(st.integers(1, 9), st.integers(1, 9), st.integers(1, 9))),
    spacing=st.tuples(*[st.floats(0.3, 4.0)] * 3),
    depth=st.floats(0.0, 6.0),
)
def test_edt_property_based(mask, spacing, depth):
    assert np.allclose(edt_squared_mm2(mask, spacing), reference.edt_squared_mm2(mask, spacing), rtol=1e-12, atol=1e-9)
    _core_agrees(mask, spacing, depth)
    core = strip_cortex(mask, spacing, depth)
    assert not (core & ~mask).any()  # core ⊆ mask


@pytest.mark.parametrize("spacing", SPACINGS)
def test_edge_cases(spacing):
    empty = np.zeros((4, 5, 6), bool)
    assert not edt_squared_mm2(empty, spacing).any() and not strip_cortex(empty, spacing, 1.0).any()
    one = empty.copy()
    one[2, 2, 3] = True
    d2 = edt_squared_mm2(one, spacing)
    assert d2[2, 2, 3] == pytest.approx(min(spacing) ** 2) and d2.sum() == d2[2, 2, 3]
    assert strip_cortex(one, spacing, 0.1 * min(spacing))[2, 2, 3]  # one voxel deep > 0.1 voxel: kept
    assert not strip_cortex(one, spacing, min(spacing)).any()  # exactly one voxel deep: a tie, stripped
    full = np.ones((5, 5, 5), bool)  # touches every border: the border counts as outside
    assert np.allclose(edt_squared_mm2(full, spacing), reference.edt_squared_mm2(full, spacing))
    # voxel [0, 2, 2]: one slice from the outside along z, three voxels along y and x
    expected = min(spacing[0], 3 * spacing[1], 3 * spacing[2]) ** 2
    assert edt_squared_mm2(full, spacing)[0, 2, 2] == pytest.approx(expected)


def test_strip_cortex_depth_in_mm_respects_anisotropy():
    mask = np.ones((11, 21, 21), bool)
    core = strip_cortex(mask, (3.0, 0.6, 0.6), 3.0)
    # z: distance from slice k to the outside is 3·(k+1) mm → slices 0 and 10 go (3 mm is not > 3)
    assert not core[0].any() and not core[10].any() and core[1, 10, 10]
    # y: 0.6·(j+1) > 3 → j ≥ 5 survive
    assert not core[5, 4, 10] and core[5, 5, 10]


def test_strip_cortex_rejects_negative_depth():
    with pytest.raises(ValueError):
        strip_cortex(np.ones((3, 3, 3), bool), (1, 1, 1), -1)


def test_statistics_unchanged_by_flips():
    rng = np.random.default_rng(5)
    vol = rng.integers(-200, 800, (12, 14, 16)).astype(np.int16)
    mask = rng.random((12, 14, 16)) > 0.6
    base = value_statistics(masked_values(vol, mask))
    for axes in [(0,), (1,), (2,), (0, 1, 2)]:
        flipped = value_statistics(masked_values(np.flip(vol, axes).copy(), np.flip(mask, axes).copy()))
        assert flipped == pytest.approx(base, rel=1e-12)


@pytest.mark.parametrize("n", [1, 2, 3, 10, 101, 5000])
@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.float32])
def test_value_statistics_match_numpy(n, dtype):
    values = np.random.default_rng(n).normal(120, 60, n).astype(dtype)
    got, ref = value_statistics(values), reference.value_statistics(values)
    for key in ref:
        assert got[key] == pytest.approx(ref[key], rel=1e-12, abs=1e-9), key


def test_value_statistics_empty():
    assert value_statistics(np.array([])) is None


@pytest.mark.parametrize("seed", range(4))
def test_label_bboxes_match_find_objects(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 7, size=(15, 18, 13)).astype(np.int16)
    labels[labels == 4] = 0
    ids = [1, 2, 3, 4, 5, 6, 30]
    got = label_bboxes(labels, ids)
    ref = reference.label_bboxes(labels, ids)
    assert got == ref


def test_label_bboxes_single_voxel_on_border():
    labels = np.zeros((5, 6, 7), np.uint8)
    labels[4, 0, 6] = 9
    assert label_bboxes(labels, [9]) == {9: (1, (slice(4, 5), slice(0, 1), slice(6, 7)))}


def test_masked_values_order_and_dtype():
    vol = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    mask = vol % 5 == 0
    assert np.array_equal(masked_values(vol, mask), vol[mask].astype(np.float64))


# ----------------------------------------------------------------------------- geodesic growth


def _geodesic_agrees(seeds, weight, spacing):
    got_labels, got_cost = geodesic_grow(seeds, weight, spacing)
    ref_labels, ref_cost, unique = reference.geodesic_grow(seeds, weight, spacing)
    finite = np.isfinite(ref_cost)
    assert np.array_equal(finite, np.isfinite(got_cost))
    assert np.allclose(got_cost[finite], ref_cost[finite], rtol=1e-12, atol=1e-9)
    assert np.array_equal(got_labels[unique], ref_labels[unique])
    assert not got_labels[~finite].any()


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("seed", range(3))
def test_geodesic_grow_matches_skimage_mcp(spacing, seed):
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(3, 14, 3))
    weight = rng.uniform(0.5, 5.0, shape)
    weight[rng.random(shape) < 0.25] = np.inf  # impassable
    seeds = np.zeros(shape, np.int32)
    for label in (1, 2, 7):
        seeds[tuple(rng.integers(0, s) for s in shape)] = label
    _geodesic_agrees(seeds, weight, spacing)


@pytest.mark.parametrize("spacing", SPACINGS)
def test_geodesic_grow_edge_cases(spacing):
    weight = np.ones((4, 5, 6))
    empty = np.zeros(weight.shape, np.int32)
    labels, cost = geodesic_grow(empty, weight, spacing)  # no seed: nothing reached
    assert not labels.any() and np.isinf(cost).all()
    one = np.zeros((1, 1, 1), np.int32)
    one[0, 0, 0] = 3
    labels, cost = geodesic_grow(one, np.ones((1, 1, 1)), spacing)
    assert labels[0, 0, 0] == 3 and cost[0, 0, 0] == 0.0
    border = empty.copy()
    border[0, 0, 0], border[-1, -1, -1] = 1, 2  # seeds in opposite corners of the array
    _geodesic_agrees(border, weight, spacing)
    blocked = weight.copy()
    blocked[:, 2, :] = np.inf  # a wall: the far side stays unreached
    one_seed = empty.copy()
    one_seed[0, 0, 0] = 1
    labels, cost = geodesic_grow(one_seed, blocked, spacing)
    assert not labels[:, 3:, :].any() and np.isinf(cost[:, 3:, :]).all()
    unseeded = one_seed.copy()
    unseeded[1, 1, 1] = 5
    wall = weight.copy()
    wall[1, 1, 1] = np.inf  # a seed on an impassable voxel is ignored
    labels, _ = geodesic_grow(unseeded, wall, spacing)
    assert 5 not in labels
    _geodesic_agrees(unseeded, wall, spacing)


def test_geodesic_grow_cost_is_mm_along_axes():
    weight = np.ones((3, 1, 1))
    seeds = np.zeros((3, 1, 1), np.int32)
    seeds[0, 0, 0] = 1
    _, cost = geodesic_grow(seeds, weight, (2.5, 1.0, 1.0))
    assert np.allclose(cost[:, 0, 0], [0.0, 2.5, 5.0])
    weight[2, 0, 0] = 3.0  # half a step through each voxel
    _, cost = geodesic_grow(seeds, weight, (2.5, 1.0, 1.0))
    assert np.allclose(cost[:, 0, 0], [0.0, 2.5, 2.5 + 2.5 * 2.0])


def test_geodesic_grow_rejects_bad_input():
    with pytest.raises(ValueError):
        geodesic_grow(np.zeros((2, 2), np.int32), np.ones((2, 2)), (1, 1, 1))
    with pytest.raises(ValueError):
        geodesic_grow(np.zeros((2, 2, 2), np.int32), np.ones((2, 2, 3)), (1, 1, 1))
    with pytest.raises(ValueError):
        geodesic_grow(np.zeros((2, 2, 2), np.int32), np.ones((2, 2, 2)), (1, 0, 1))


def test_geodesic_grow_up_factor_and_free_label():
    # a column of 11 voxels, seed 1 at the bottom, seed 2 at the top
    weight = np.ones((11, 1, 1))
    seeds = np.zeros((11, 1, 1), np.int32)
    seeds[0, 0, 0], seeds[10, 0, 0] = 1, 2
    labels, _ = geodesic_grow(seeds, weight, (1.0, 1.0, 1.0))
    assert list(labels[:, 0, 0]).count(1) in (5, 6)  # they meet in the middle
    labels, cost = geodesic_grow(seeds, weight, (1.0, 1.0, 1.0), up_factor=3.0)
    # going up costs 3 per step for label 1: it reaches 2 voxels (cost 3, 6) before label 2
    # (cost 1 per step down) gets there
    assert list(labels[:, 0, 0]).count(1) == 3 and np.isclose(cost[2, 0, 0], 6.0)
    labels, _ = geodesic_grow(seeds, weight, (1.0, 1.0, 1.0), up_factor=3.0, free_label=1)
    assert list(labels[:, 0, 0]).count(1) in (5, 6)  # label 1 is exempt: the middle again
    with pytest.raises(ValueError):
        geodesic_grow(seeds, weight, (1.0, 1.0, 1.0), up_factor=0.0)


@pytest.mark.parametrize("threads", [2, 5])
def test_kernels_split_over_threads_match_references(monkeypatch, threads):
    """The EDT and the label boxes give the same answer when their loops are split over threads
    (forced here on small arrays, uneven chunks included)."""
    from volbmd_kernels import _options

    monkeypatch.setattr(_options, "MIN_VOXELS_PER_THREAD", 1)
    monkeypatch.setattr(_options.os, "cpu_count", lambda: threads)
    rng = np.random.default_rng(threads)
    for shape, spacing in (((7, 11, 13), (2.5, 0.7, 0.7)), ((1, 9, 4), (1.0, 1.0, 3.0)), ((13, 3, 17), (0.5, 1.5, 1.0))):
        mask = rng.random(shape) < 0.8
        assert np.allclose(edt_squared_mm2(mask, spacing), reference.edt_squared_mm2(mask, spacing), rtol=1e-12, atol=1e-9)
        labels = rng.integers(0, 5, size=shape).astype(np.uint8)
        assert label_bboxes(labels, [1, 2, 3, 4, 9]) == reference.label_bboxes(labels, [1, 2, 3, 4, 9])

"""Canonical frame: all 48 axis permutations and flips land in LPS and come back exactly."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from volbmd.geometry import canonicalize, orientation_code, uncanonicalize
from volbmd.volume import LabelMap, Volume


def _signed_permutations():
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            d = np.zeros((3, 3))
            for c in range(3):
                d[perm[c], c] = signs[c]
            yield d


DIRECTIONS = list(_signed_permutations())


def test_there_are_48_orientations():
    codes = {orientation_code(d) for d in DIRECTIONS}
    assert len(DIRECTIONS) == 48 and len(codes) == 48


@pytest.mark.parametrize("index", range(48))
def test_canonicalize_round_trip_all_orientations(index):
    rng = np.random.default_rng(index)
    direction = DIRECTIONS[index]
    shape = (5, 6, 7)
    array = rng.integers(-1000, 2000, size=shape).astype(np.int16)
    spacing = (2.5, 0.7, 0.9)
    origin = tuple(rng.uniform(-200, 200, 3))
    vol = Volume(array=array, spacing_mm=spacing, origin_lps_mm=origin, direction_lps=direction)

    canon, reo = canonicalize(vol)
    assert np.array_equal(canon.direction_lps, np.eye(3))
    assert orientation_code(canon.direction_lps) == "LPS"
    # every voxel keeps its world position and its value
    src_idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    src_world = vol.geometry.index_to_world(src_idx)
    canon_idx = np.rint(np.linalg.solve(np.diag(canon.spacing_mm[::-1]), (src_world - canon.origin_lps_mm).T).T)[:, ::-1]
    canon_idx = canon_idx.astype(int)
    assert np.allclose(canon.geometry.index_to_world(canon_idx), src_world, atol=1e-6)
    assert np.array_equal(canon.array[tuple(canon_idx.T)], array[tuple(src_idx.T)])
    # world axes increase along the canonical array axes: z with axis 0, y with 1, x with 2
    w0 = canon.geometry.index_to_world([0, 0, 0])
    assert canon.geometry.index_to_world([1, 0, 0])[2] > w0[2]
    assert canon.geometry.index_to_world([0, 1, 0])[1] > w0[1]
    assert canon.geometry.index_to_world([0, 0, 1])[0] > w0[0]

    back = uncanonicalize(canon, reo)
    assert np.array_equal(back.array, array)
    assert back.geometry == vol.geometry


def test_label_map_follows_and_keeps_type():
    d = DIRECTIONS[13]
    labels = LabelMap(
        array=np.arange(60, dtype=np.int32).reshape(3, 4, 5) % 3,
        spacing_mm=(1, 2, 3),
        direction_lps=d,
        labels={"L1": 1, "L2": 2},
    )
    canon, reo = canonicalize(labels)
    assert isinstance(canon, LabelMap) and canon.labels == {"L1": 1, "L2": 2}
    assert np.array_equal(uncanonicalize(canon, reo).array, labels.array)


def test_oblique_grid_keeps_residual_rotation():
    angle = np.radians(5.0)
    rot = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    direction = rot @ np.diag([-1.0, -1.0, 1.0])  # RAS, tilted 5°
    vol = Volume(array=np.zeros((4, 4, 4), np.int16), spacing_mm=(1, 1, 1), direction_lps=direction)
    canon, reo = canonicalize(vol)
    assert canon.metadata["oblique_deg"] == pytest.approx(5.0, abs=1e-3)
    assert np.allclose(np.diag(canon.direction_lps), [1.0, np.cos(angle), np.cos(angle)])
    assert uncanonicalize(canon, reo).geometry == vol.geometry


def test_orientation_codes_match_nibabel_convention():
    assert orientation_code(np.eye(3)) == "LPS"
    assert orientation_code(np.diag([-1.0, -1.0, 1.0])) == "RAS"
    assert orientation_code(np.diag([1.0, -1.0, 1.0])) == "LAS"


@pytest.mark.parametrize(
    "shape,factors", [((8, 9, 10), (2, 3, 2)), ((5, 4, 7), (1, 1, 1)), ((7, 11, 13), (3, 4, 5)), ((1, 2, 3), (2, 2, 2))]
)
def test_block_mean_matches_reference(shape, factors):
    from volbmd.geometry import block_mean

    rng = np.random.default_rng(0)
    arr = rng.integers(-1000, 2000, shape).astype(np.int16)
    got = block_mean(arr, factors)
    oz, oy, ox = (-(-n // f) for n, f in zip(shape, factors))
    assert got.shape == (oz, oy, ox)
    for k in range(oz):
        for j in range(oy):
            for i in range(ox):
                block = arr[
                    k * factors[0] : (k + 1) * factors[0],
                    j * factors[1] : (j + 1) * factors[1],
                    i * factors[2] : (i + 1) * factors[2],
                ]
                assert got[k, j, i] == pytest.approx(block.mean(), rel=1e-6)

"""Shared fixtures. Real scans live in ../shared/data beside the repository."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("VOLBMD_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real scans. Skips on a user's machine without them; fails in CI, where they must exist."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"shared data folder {SHARED_DATA} is missing in CI")
        pytest.skip(f"shared data folder {SHARED_DATA} not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def spine_phantom():
    from volbmd.phantoms import make_spine_phantom

    return make_spine_phantom()


@pytest.fixture(scope="session")
def esp_scan():
    from volbmd.phantoms import make_esp_phantom

    return make_esp_phantom()


@pytest.fixture(scope="session")
def esp_files(esp_scan, tmp_path_factory):
    from volbmd.io import write_volume

    folder = tmp_path_factory.mktemp("esp")
    write_volume(esp_scan.volume, folder / "scan.nii.gz")
    write_volume(esp_scan.labels, folder / "labels.nii.gz")
    write_volume(esp_scan.rods, folder / "rods.nii.gz")
    return folder


def pytest_ignore_collect(collection_path, config):
    """tests/gui runs in its own process (tests/test_gui.py): Qt/OpenGL (Mesa's LLVM) and torch's
    triton (its own LLVM) in one process crash at import."""
    if collection_path.name == "gui" and collection_path.is_dir() and not os.environ.get("VOLBMD_GUI_TESTS"):
        return True
    return None

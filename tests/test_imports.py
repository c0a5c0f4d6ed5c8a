"""Importing volbmd must stay light: no torch, napari, Qt, monai or nnunetv2."""

import subprocess
import sys


def test_import_loads_no_heavy_modules():
    code = (
        "import sys, volbmd, volbmd.cli, volbmd_kernels; "
        "heavy = [m for m in ('torch', 'napari', 'qtpy', 'PyQt6', 'monai', 'nnunetv2', 'itk') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_every_subpackage_is_packaged():
    """A folder of volbmd/ missing from pyproject's package list breaks installed copies."""
    import tomllib
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    listed = set(tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(repo).parts)
        for p in (repo / "volbmd").rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    assert found <= listed, f"add to pyproject packages: {sorted(found - listed)}"

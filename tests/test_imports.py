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


def test_command_line_defers_scipy_and_numba():
    """The CLI and the pipeline module load no scipy.ndimage or numba: the pipeline imports them on a
    thread while the scan is read (the read releases the GIL), so their start-up is hidden."""
    code = (
        "import sys, volbmd, volbmd.cli, volbmd.pipeline, volbmd.segment.masks, volbmd.io.itk_files; "
        "print(','.join(m for m in ('scipy.ndimage', 'numba') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_public_names_resolve():
    import volbmd
    from volbmd.pipeline import analyze
    from volbmd.volume import Volume

    assert volbmd.analyze is analyze and volbmd.Volume is Volume
    assert all(getattr(volbmd, name) is not None for name in volbmd.__all__)
    assert set(volbmd.__all__) <= set(dir(volbmd))

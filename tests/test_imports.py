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

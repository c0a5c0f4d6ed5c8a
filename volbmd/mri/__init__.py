"""MRI: multi-echo fat–water separation and vertebral marrow proton-density fat fraction (PDFF)."""

from volbmd.mri.echoes import MultiEchoData, read_echoes
from volbmd.mri.separate import FatWaterMaps, SeparationOptions, challenge_score, separate_fat_water
from volbmd.mri.spectra import FatSpectrum, load_spectrum

__all__ = [
    "MultiEchoData",
    "read_echoes",
    "FatWaterMaps",
    "SeparationOptions",
    "separate_fat_water",
    "challenge_score",
    "FatSpectrum",
    "load_spectrum",
]

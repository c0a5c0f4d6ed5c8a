"""Fat spectra (configs/mri/fat_spectra.yaml) and the fat phasor of a multi-echo acquisition."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np

from volbmd.errors import ConfigError

__all__ = ["FatSpectrum", "load_spectrum", "spectrum_names", "GYROMAGNETIC_MHZ_PER_T"]

#: Proton gyromagnetic ratio over 2π (γ̄), in MHz per tesla.
GYROMAGNETIC_MHZ_PER_T = 42.577478


@dataclass(frozen=True)
class FatSpectrum:
    """Fat peaks: shifts in ppm relative to water and relative amplitudes (sum 1)."""

    name: str
    ppm: tuple[float, ...]
    amplitudes: tuple[float, ...]
    source: str = ""

    def frequencies_hz(self, field_t: float) -> np.ndarray:
        """Peak frequencies relative to water, in Hz, at ``field_t`` tesla."""
        return np.asarray(self.ppm) * GYROMAGNETIC_MHZ_PER_T * field_t

    def phasor(self, te_s, field_t: float) -> np.ndarray:
        """``c_n = Σ_p a_p exp(i2π f_p t_n)``: the fat signal at each echo time relative to water's."""
        te = np.asarray(te_s, np.float64)
        freqs = self.frequencies_hz(field_t)
        return (np.asarray(self.amplitudes)[None, :] * np.exp(2j * np.pi * freqs[None, :] * te[:, None])).sum(axis=1)


def _all() -> dict:
    import yaml

    return yaml.safe_load((resources.files("volbmd_configs") / "mri" / "fat_spectra.yaml").read_text())


def spectrum_names() -> list[str]:
    return list(_all())


def load_spectrum(name: str) -> FatSpectrum:
    """The named spectrum of configs/mri/fat_spectra.yaml (amplitudes normalised to sum 1)."""
    spectra = _all()
    if name not in spectra:
        raise ConfigError(f"unknown fat spectrum {name!r}; known: {', '.join(spectra)}", "--spectrum")
    entry = spectra[name]
    ppm = tuple(float(v) for v in entry["ppm"])
    amplitudes = np.asarray(entry["amplitudes"], np.float64)
    if len(ppm) != len(amplitudes) or len(ppm) == 0 or np.any(amplitudes < 0) or amplitudes.sum() <= 0:
        raise ConfigError(f"fat spectrum {name!r}: ppm and amplitudes must be equally long, amplitudes ≥ 0", "spectra")
    return FatSpectrum(name, ppm, tuple(float(a) for a in amplitudes / amplitudes.sum()), str(entry.get("source", "")))

"""Multi-echo complex gradient-echo data: read, checked, on a (z, y, x) grid like every volbmd volume.

Formats:

* the ISMRM 2012 fat–water challenge ``.mat`` (``imDataParams``: images (x, y, slice, echo) complex,
  TE in seconds, FieldStrength in tesla, PrecessionIsClockwise; ``ref`` and ``eval_mask`` when
  present). Slice k of the file is array index z = k, x and y as stored; the voxel size is not
  recorded, so 1 mm is assumed (it only labels the output grid).
* a complex NumPy stack ``.npy`` of shape (z, y, x, echo), with the echo times and field strength
  given (``--te``, ``--field-t``).
* magnitude and phase images per echo (NIfTI, NRRD, MHA: one 3D file per echo, as dcm2niix writes
  them), on one grid, which the outputs keep. Phase in radians, or Siemens' integers −4096..4095.
  Echo times and field strength come from dcm2niix's JSON sidecars (``EchoTime`` in s,
  ``MagneticFieldStrength`` in T) when they are not given.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from volbmd.errors import InputError

__all__ = ["MultiEchoData", "read_echoes", "read_magnitude_phase", "ECHO_FORMATS"]

ECHO_FORMATS = (".mat (ISMRM 2012 challenge)", ".npy (complex, z·y·x·echo)")


@dataclass(frozen=True)
class MultiEchoData:
    """Complex echoes ``signal`` (z, y, x, echo), with counter-clockwise precession already undone
    (the data's phase evolves as exp(+i2πft) for a positive off-resonance f)."""

    signal: np.ndarray
    te_s: tuple[float, ...]
    field_t: float
    spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin_lps_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction_lps: tuple[tuple[float, float, float], ...] = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    reference_ff: np.ndarray | None = None  # fat fraction 0–1 (challenge data)
    eval_mask: np.ndarray | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        signal = np.asarray(self.signal)
        where = self.source
        if signal.ndim != 4:
            raise InputError(f"echo data must be 4-D (z, y, x, echo), got {signal.ndim}-D", where)
        if not np.iscomplexobj(signal):
            raise InputError("echo data must be complex (magnitude and phase)", where)
        te = np.asarray(self.te_s, np.float64)
        if te.ndim != 1 or len(te) != signal.shape[-1]:
            raise InputError(f"{signal.shape[-1]} echoes but {te.size} echo times", where)
        if len(te) < 3:
            raise InputError(f"fat–water separation with R2* needs at least 3 echoes, got {len(te)}", where)
        if not np.all(np.isfinite(te)) or te[0] <= 0 or np.any(np.diff(te) <= 0) or te[-1] > 0.2:
            raise InputError(f"echo times must rise, in seconds, between 0 and 0.2: {te.tolist()}", where)
        if not (0.05 <= float(self.field_t) <= 15.0):
            raise InputError(f"field strength {self.field_t} T is not a scanner's (0.05–15 T)", where)
        if not np.all(np.isfinite(signal)):
            raise InputError(f"{int(np.count_nonzero(~np.isfinite(signal)))} echo values are NaN or infinite", where)
        for name, extra in (("reference_ff", self.reference_ff), ("eval_mask", self.eval_mask)):
            if extra is not None and np.shape(extra) != signal.shape[:3]:
                raise InputError(f"{name} of shape {np.shape(extra)} does not fit the echoes' {signal.shape[:3]}", where)
        object.__setattr__(self, "signal", signal.astype(np.complex64, copy=False))
        object.__setattr__(self, "te_s", tuple(float(t) for t in te))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.signal.shape[:3])  # type: ignore[return-value]

    def volume(self, array: np.ndarray):
        """A :class:`~volbmd.volume.Volume` of ``array`` (z, y, x) on the echoes' grid."""
        from volbmd.volume import Volume

        return Volume(array, self.spacing_mm, self.origin_lps_mm, self.direction_lps, source=self.source)

    @property
    def echo_spacing_s(self) -> float | None:
        """The echo spacing when the echoes are evenly spaced (to 1 µs), else None."""
        steps = np.diff(self.te_s)
        return float(steps.mean()) if np.ptp(steps) < 1e-6 else None


def _read_challenge_mat(path: Path) -> MultiEchoData:
    import scipy.io

    try:
        content = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    except Exception as exc:
        raise InputError(f"cannot read as a MATLAB file ({exc})", path) from None
    params = content.get("imDataParams")
    if params is None:
        raise InputError("no imDataParams in the file (not the ISMRM 2012 challenge format)", path)
    try:
        images = np.asarray(params.images)
        te = np.atleast_1d(np.asarray(params.TE, np.float64))
        field_t = float(params.FieldStrength)
        clockwise = float(getattr(params, "PrecessionIsClockwise", 1))
    except AttributeError as exc:
        raise InputError(f"imDataParams lacks {exc}", path) from None
    if images.ndim == 5:  # (x, y, z, coils, echoes) with one coil
        if images.shape[3] != 1:
            raise InputError(f"{images.shape[3]} coils: combine them first", path)
        images = images[:, :, :, 0, :]
    if images.ndim == 3:  # one slice
        images = images[:, :, None, :]
    if images.ndim != 4:
        raise InputError(f"images must be (x, y, slice, echo), got shape {images.shape}", path)
    if clockwise <= 0:  # the model's phase evolves as exp(+i2πft): undo counter-clockwise precession
        images = np.conj(images)

    def on_grid(key: str, dtype) -> np.ndarray | None:  # (x, y, slice) as stored -> (z, y, x)
        value = getattr(params, key, None)
        if value is None:
            return None
        arr = np.asarray(value)
        return (arr[:, :, None] if arr.ndim == 2 else arr).transpose(2, 1, 0).astype(dtype)

    return MultiEchoData(
        images.transpose(2, 1, 0, 3),
        tuple(te),
        field_t,
        reference_ff=on_grid("ref", np.float32),
        eval_mask=on_grid("eval_mask", bool),
        source=str(path),
    )


def _read_npy(path: Path, te_s, field_t) -> MultiEchoData:
    try:
        signal = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise InputError(f"cannot read as a NumPy array ({exc})", path) from None
    if te_s is None or field_t is None:
        raise InputError("a .npy stack records no echo times or field strength: give --te and --field-t", path)
    return MultiEchoData(signal, tuple(te_s), float(field_t), source=str(path))


def _phase_radians(phase: np.ndarray, path) -> np.ndarray:
    values = np.asarray(phase, np.float64)
    low, high = float(values.min()), float(values.max())
    if low >= -np.pi - 0.01 and high <= np.pi + 0.01:
        return values
    if low >= -4096 and high <= 4096 and np.allclose(values, np.round(values)):
        return values * (np.pi / 4096.0)  # Siemens' phase images
    raise InputError(f"phase from {low:g} to {high:g}: neither radians (±π) nor Siemens' −4096..4095", path)


def _sidecar(path: Path) -> dict:
    import json

    name = path.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    sidecar = path.with_name(name + ".json")
    if not sidecar.is_file():
        return {}
    try:
        content = json.loads(sidecar.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the JSON sidecar ({exc})", sidecar) from None
    return content if isinstance(content, dict) else {}


def read_magnitude_phase(
    magnitude: Sequence[str | os.PathLike],
    phase: Sequence[str | os.PathLike],
    *,
    te_s: tuple[float, ...] | None = None,
    field_t: float | None = None,
) -> MultiEchoData:
    """Multi-echo data from magnitude and phase images, one 3D file each per echo, in echo order."""
    from volbmd.io import load_volume

    if len(magnitude) != len(phase):
        raise InputError(f"{len(magnitude)} magnitude but {len(phase)} phase images", "--phase")
    mags = [load_volume(p) for p in magnitude]
    first = mags[0]
    echoes = []
    for m_path, p_path, mag in zip(magnitude, phase, mags, strict=True):
        ph = load_volume(p_path)
        for image, path in ((mag, m_path), (ph, p_path)):
            if not image.geometry.matches(first.geometry):
                raise InputError(f"not on the first echo's grid: {image.geometry.difference(first.geometry)}", path)
        if float(mag.array.min()) < 0:
            raise InputError("has negative values: not a magnitude image", m_path)
        echoes.append(np.asarray(mag.array, np.float64) * np.exp(1j * _phase_radians(ph.array, p_path)))
    sidecars = [_sidecar(Path(p)) for p in magnitude]
    if te_s is None:
        found = [c.get("EchoTime") for c in sidecars]
        if any(t is None for t in found):
            raise InputError(
                "echo times unknown: give --te (or keep dcm2niix's JSON sidecars beside the files)", magnitude[0]
            )
        te_s = tuple(float(t) for t in found)  # type: ignore[arg-type]
    if field_t is None:
        strengths = {c.get("MagneticFieldStrength") for c in sidecars} - {None}
        if len(strengths) != 1:
            raise InputError("field strength unknown: give --field-t (or keep dcm2niix's JSON sidecars)", magnitude[0])
        field_t = float(strengths.pop())  # type: ignore[arg-type]
    return MultiEchoData(
        np.stack(echoes, axis=-1),
        tuple(te_s),
        float(field_t),
        spacing_mm=first.spacing_mm,
        origin_lps_mm=first.origin_lps_mm,
        direction_lps=first.direction_lps,
        source=str(magnitude[0]),
    )


def read_echoes(
    path: str | os.PathLike, *, te_s: tuple[float, ...] | None = None, field_t: float | None = None
) -> MultiEchoData:
    """Read multi-echo complex data (see the module docstring). ``te_s`` and ``field_t`` are needed
    where the file does not record them and must agree with it where it does."""
    path = Path(path)
    if not path.is_file():
        raise InputError("not found", path)
    suffix = path.suffix.lower()
    if suffix == ".mat":
        data = _read_challenge_mat(path)
        if te_s is not None and not np.allclose(te_s, data.te_s, atol=1e-7):
            raise InputError(f"--te {list(te_s)} differs from the file's echo times {list(data.te_s)}", path)
        if field_t is not None and abs(field_t - data.field_t) > 1e-3:
            raise InputError(f"--field-t {field_t} differs from the file's {data.field_t} T", path)
        return data
    if suffix == ".npy":
        return _read_npy(path, te_s, field_t)
    raise InputError(f"unknown echo format '{suffix}'; volbmd reads {', '.join(ECHO_FORMATS)}", path)

"""Discs along the straightened spine, chosen jointly.

The body centre line is resampled by arc length and the scan is sampled on planes normal to it
(a curved reformat). Two profiles come out: the mean HU of the body's core (a disc is a trough
between two bright endplates) and the HU beside the canal (pedicles and rib heads, periodic with
the vertebrae). The local period of both profiles (autocorrelation) says how tall the vertebrae are
at each height of the spine; the discs are then chosen together by dynamic programming: each
candidate trough earns its depth and each spacing pays for its distance from the local period, so
a faint disc between two strong ones is taken and a trough inside a body is not. Each disc plane is
finally tilted and shifted to lie deepest in the HU trough between its two endplates (the
lumbosacral disc lies at up to 45°), as far as that trough stands out of the noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.signal import find_peaks

from volbmd.segment.classical.options import DiscOptions
from volbmd.segment.classical.types import CentreLine, Disc, SpacingZYX, SpineTrack

__all__ = [
    "centre_line",
    "plane_basis",
    "Profiles",
    "spine_profiles",
    "local_period",
    "disc_signs",
    "band_share",
    "disc_alternatives",
    "choose_discs",
    "fit_plane",
    "place_disc",
    "find_discs",
]


def centre_line(
    track: SpineTrack,
    step_mm: float,
    smooth_mm: float,
    extend_mm: tuple[float, float] = (0.0, 0.0),
    z_range_mm: tuple[float, float] | None = None,
) -> CentreLine:
    """The body centre line (z, y, x) smoothed and resampled every ``step_mm`` of arc length, with
    the body half depth and the canal's centre carried along. The ends are extended straight by up
    to ``extend_mm`` (bottom, top; within ``z_range_mm``, the scan's extent): a disc just past the
    last tracked body is then still seen between its two endplates."""
    pts = np.column_stack([track.z_mm, track.body_yx_mm])
    canal = np.column_stack([track.z_mm, track.canal_yx_mm])
    dz = float(np.median(np.diff(track.z_mm))) if len(track.z_mm) > 1 else 1.0
    sigma = max(0.5, smooth_mm / dz)
    pts = ndi.gaussian_filter1d(pts, sigma=sigma, axis=0, mode="nearest")
    canal = ndi.gaussian_filter1d(canal, sigma=sigma, axis=0, mode="nearest")
    half = np.asarray(track.half_depth_mm, float)
    n_before = n_after = 0
    if max(extend_mm) > 0 and len(pts) > 1:
        lo, hi = z_range_mm if z_range_mm is not None else (-np.inf, np.inf)
        ends = []
        for end, inner, side, reach in ((0, 1, -1, extend_mm[0]), (-1, -2, 1, extend_mm[1])):
            d = pts[end] - pts[inner]
            d = d / max(np.linalg.norm(d), 1e-9)
            room = (hi - pts[end, 0]) if side > 0 else (pts[end, 0] - lo)
            length = min(reach, max(0.0, room / max(abs(d[0]), 1e-6)))
            steps = np.arange(step_mm, length + 1e-9, step_mm)
            ends.append((d, steps))
        (d0, s0), (d1, s1) = ends
        n_before, n_after = len(s0), len(s1)
        before = pts[0] + s0[::-1, None] * d0
        after = pts[-1] + s1[:, None] * d1
        pts = np.concatenate([before, pts, after])
        canal = np.concatenate([canal[0] + s0[::-1, None] * d0, canal, canal[-1] + s1[:, None] * d1])
        half = np.concatenate([np.full(len(s0), half[0]), half, np.full(len(s1), half[-1])])
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    grid = np.arange(0.0, s[-1] + 1e-9, step_mm)
    out = np.column_stack([np.interp(grid, s, pts[:, c]) for c in range(3)])
    can = np.column_stack([np.interp(grid, s, canal[:, c]) for c in range(3)])
    half_line = np.interp(grid, s, half)
    tan = np.gradient(out, axis=0) if len(out) > 1 else np.array([[1.0, 0.0, 0.0]])
    tan /= np.maximum(np.linalg.norm(tan, axis=1, keepdims=True), 1e-9)
    tracked = (float(s[n_before]), float(s[len(s) - 1 - n_after]))
    return CentreLine(out, tan, step_mm, half_line, can, tracked)


def plane_basis(normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors spanning the plane normal to ``normal`` (z, y, x; or rows of an (N, 3)
    array): the first is the patient's left-right direction projected on the plane, the second
    points anteriorly when the normal points up."""
    e1 = np.array([0.0, 0.0, 1.0]) - normal * normal[..., 2:3]
    e1 = e1 / np.linalg.norm(e1, axis=-1, keepdims=True)
    e2 = np.cross(normal, e1)
    return e1, e2


def _sample(array: np.ndarray, spacing: SpacingZYX, points_mm: np.ndarray) -> np.ndarray:
    """Trilinear samples of ``array`` at points (..., 3) in mm (voxel i centred at (i + 0.5)·s)."""
    idx = points_mm / np.asarray(spacing) - 0.5
    flat = idx.reshape(-1, 3).T
    return ndi.map_coordinates(array, flat, order=1, mode="nearest", output=np.float32).reshape(idx.shape[:-1])


@dataclass
class Profiles:
    """Per centre-line point: mean HU of the body's core, mean HU beside the canal (pedicles, rib
    heads), and the share of the core inside the working grid's filled bone mask."""

    core_hu: np.ndarray
    beside_hu: np.ndarray
    bone_fraction: np.ndarray


def spine_profiles(
    array: np.ndarray, spacing: SpacingZYX, bone: np.ndarray, bone_spacing: SpacingZYX, line: CentreLine, opts: DiscOptions
) -> Profiles:
    """The profiles along ``line``, each sampled on the plane normal to it."""
    e1, e2 = plane_basis(line.tangents)
    radius = np.maximum(opts.core_min_radius_mm, opts.core_fraction * line.half_depth_mm)
    r_max = float(radius.max())
    g = np.arange(-r_max, r_max + 1e-9, 1.5)
    u, v = (a.ravel() for a in np.meshgrid(g, g, indexing="ij"))
    inside = (u[None, :] ** 2 + v[None, :] ** 2) <= radius[:, None] ** 2  # (N, P)
    n_inside = np.maximum(inside.sum(axis=1), 1)
    pts = line.points_mm[:, None, :] + u[None, :, None] * e1[:, None, :] + v[None, :, None] * e2[:, None, :]
    core = np.where(inside, _sample(array, spacing, pts), 0.0).sum(axis=1) / n_inside
    idx = np.floor(pts / np.asarray(bone_spacing)).astype(np.int64)
    ok = np.all((idx >= 0) & (idx < np.asarray(bone.shape)), axis=2) & inside
    idx = np.where(ok[..., None], idx, 0)
    fraction = (bone[idx[..., 0], idx[..., 1], idx[..., 2]] & ok).sum(axis=1) / n_inside
    lat = np.concatenate([np.arange(9.0, 19.0, 2.0), -np.arange(9.0, 19.0, 2.0)])
    ap = np.arange(-6.0, 3.0, 2.0)  # from 6 mm in front of the canal's centre to 2 mm behind it
    lu, lv = (a.ravel() for a in np.meshgrid(lat, ap, indexing="ij"))
    pts = line.canal_mm[:, None, :] + lu[None, :, None] * e1[:, None, :] - lv[None, :, None] * e2[:, None, :]
    beside = _sample(array, spacing, pts).mean(axis=1)
    return Profiles(core.astype(np.float64), beside.astype(np.float64), fraction.astype(np.float64))


def _detrended(x: np.ndarray, window: int) -> np.ndarray:
    d = x - ndi.uniform_filter1d(x, max(3, window), mode="nearest")
    sd = float(np.std(d))
    return d / sd if sd > 1e-6 else d * 0.0


def local_period(signals: list[np.ndarray], step_mm: float, opts: DiscOptions) -> tuple[np.ndarray, np.ndarray]:
    """Per point: the local period (mm) of the profiles and its strength (autocorrelation, 0–1).

    Windows of ``period_window_mm`` every 10 mm (only those at least ``period_min_window_share``
    whole, where any are; the ends take the nearest one's period); in each, the lag in
    ``period_range_mm`` with the highest mean autocorrelation, preferring the shortest lag within
    85 % of the best (a period, not twice it). NaN where no window fits."""
    n = len(signals[0])
    lo, hi = (int(round(v / step_mm)) for v in opts.period_range_mm)
    half_w = int(round(opts.period_window_mm / step_mm / 2))
    xs = [_detrended(s, int(round(2 * opts.period_range_mm[1] / step_mm))) for s in signals]
    centres, periods, strengths = [], [], []
    windows = [(c, max(0, c - half_w), min(n, c + half_w + 1)) for c in range(0, n, max(1, int(round(10.0 / step_mm))))]
    # a window cut short by an end of the line holds a period or two: its autocorrelation follows
    # whatever lies there (the sacrum's segments; on a re-positioned scan of the lumbar spine the
    # bottom period fell from 37 to 24 mm and an extra disc split L5). Near the ends the period of
    # the nearest window that is nearly whole is used instead, when there is one.
    whole = [w for w in windows if w[2] - w[1] >= opts.period_min_window_share * (2 * half_w + 1)]
    for c, a, b in whole or windows:
        if b - a < 2 * lo + 4:
            continue
        lags = np.arange(lo, min(hi, (b - a) // 2) + 1)
        if lags.size < 3:
            continue
        r = np.zeros(lags.size)
        for x in xs:
            seg = x[a:b]
            for i, lag in enumerate(lags):
                p, q = seg[:-lag], seg[lag:]
                sp, sq = p.std(), q.std()
                if sp > 1e-9 and sq > 1e-9:
                    r[i] += float(np.mean((p - p.mean()) * (q - q.mean())) / (sp * sq)) / len(xs)
        peaks, _ = find_peaks(r)
        if peaks.size == 0:
            continue
        best = float(r[peaks].max())
        if best <= 0:
            continue
        chosen = int(peaks[np.flatnonzero(r[peaks] >= 0.85 * best)[0]])
        centres.append(c)
        periods.append(lags[chosen] * step_mm)
        strengths.append(max(0.0, float(r[chosen])))
    if not centres:
        return np.full(n, np.nan), np.zeros(n)
    grid = np.arange(n)
    period = np.interp(grid, centres, ndi.median_filter(np.asarray(periods), size=3, mode="nearest"))
    strength = np.interp(grid, centres, strengths)
    return period, strength


def _trough(x: np.ndarray, w: int) -> np.ndarray:
    """How far ``x`` lies below the lower of its maxima within ``w`` samples before and after."""
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(x, w, mode="edge"), w + 1).max(axis=1)
    before, after = windows[: x.size], windows[w : w + x.size]  # max over [i - w, i] and [i, i + w]
    return np.minimum(before, after) - x


def _trusted_period(period: np.ndarray, strength: np.ndarray, fallback: np.ndarray, opts: DiscOptions) -> np.ndarray:
    """The local period where the profiles are clearly periodic (``strong_period_strength``); where
    they are only weakly so (``min_period_strength``), the local value if it stays within
    ``period_tolerance`` of the nearest clear one (periods change slowly along the spine), else the
    clear one; with no clear periodicity anywhere, the weak values, and with none at all, the
    body's depth (``fallback``)."""
    finite = np.isfinite(period)
    strong = finite & (strength >= opts.strong_period_strength)
    weak = finite & (strength >= opts.min_period_strength)
    if strong.any():
        good = np.flatnonzero(strong)
        nearest = np.interp(np.arange(period.size), good, period[good])
        close = weak & (np.abs(period - nearest) <= opts.period_tolerance * nearest)
        out = np.where(close, period, nearest)
    elif weak.any():
        good = np.flatnonzero(weak)
        out = np.interp(np.arange(period.size), good, period[good])
    else:
        out = fallback
    return np.clip(out, *opts.period_range_mm)


def disc_signs(
    profiles: Profiles, period_mm: np.ndarray, step_mm: float, opts: DiscOptions, smooth_mm: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Per point, how much a disc it looks like by two kinds of sign, each narrow compared with the
    vertebra (within ``endplate_fraction`` of the local period either side): (dark, band). The
    larger of the two is the point's disc score (0 = not at all, about 1 = a clear disc).

    - dark: a gap in the bone (the core leaves the filled bone mask between two bony stretches: a
      disc darker than bone) or a trough of HU (the core dips below the lower of the brightest
      values on either side: a dark disc, with or without bright endplates), as a share of the
      profile's spread;
    - band: the mean within ``band_half_mm`` stands above the mean of the rest of the reach (a thin
      disc between dense endplates, blurred into one bright band, as in osteoporotic thoracic spines
      or thick slices), as a share of the spread.

    The body's interior, bounded by its two endplates a whole body height apart, is neither. The
    profiles are smoothed by ``smooth_mm`` first (half a slice: thick slices make steps)."""
    x = ndi.gaussian_filter1d(profiles.core_hu, sigma=max(0.5, smooth_mm / step_mm))
    f = ndi.gaussian_filter1d(profiles.bone_fraction, sigma=max(0.5, smooth_mm / step_mm))
    spread = max(20.0, float(np.percentile(x, 90) - np.percentile(x, 10)))
    reach = np.clip(opts.endplate_fraction * period_mm, *opts.endplate_reach_range_mm)
    w_at = np.maximum(1, np.round(reach / step_mm).astype(int))
    half = max(1, int(round(opts.band_half_mm / step_mm)))
    inner = ndi.uniform_filter1d(x, 2 * half + 1, mode="nearest")
    dark = np.zeros_like(x)
    band = np.zeros_like(x)
    for w in np.unique(w_at):
        here = w_at == w
        dark[here] = np.maximum(_trough(x, w) / spread, _trough(f, w))[here]
        outer_n = 2 * w + 1 - (2 * half + 1)
        if outer_n > 0:
            total = ndi.uniform_filter1d(x, 2 * w + 1, mode="nearest") * (2 * w + 1)
            band[here] = ((inner - (total - inner * (2 * half + 1)) / outer_n) / spread)[here]
    return np.clip(dark, 0.0, None), np.clip(band, 0.0, None)


def band_share(dark: np.ndarray, band: np.ndarray) -> np.ndarray:
    """Per point, how much of its disc sign is a bright band rather than a dark trough (0–1; 0.5
    where it has neither)."""
    total = dark + band
    return np.where(total > 1e-9, band / np.maximum(total, 1e-9), 0.5)


def choose_discs(
    score: np.ndarray, period_mm: np.ndarray, step_mm: float, opts: DiscOptions, kind: np.ndarray | None = None
) -> list[int]:
    """Indices of the discs: the chain of candidate troughs that maximises the sum of their scores,
    less ``disc_cost`` each, minus ``period_penalty`` · (log(spacing / local period))² per spacing;
    spacings below ``spacing_range[0]`` periods are not allowed. The cost per disc keeps a chain of
    weak candidates at short spacings from outscoring fewer clear ones (on a noise draw of a CTA,
    two extra weak troughs once split T1 in two, and the rib count then named 13 thoracic levels).

    ``kind`` (per point, :func:`band_share`): two neighbouring discs inside the chain pay
    ``sign_switch_cost`` · the difference of their kinds (the first and last links do not: the
    disc past the end of a stretch may be of another kind where disc heights change, at the
    thoracolumbar or cervicothoracic junction). On thick slices the discs of one stretch of spine look alike
    (each slice blurs a thin disc and its endplates into one bright band): where bands mark the
    discs, the troughs half a vertebra away are the bodies' darker middles, and the 5 mm chest CT's
    T3–T6 otherwise read either way from one noise draw to the next. (:func:`find_discs` scales
    the cost by the slice thickness: thin slices resolve each disc, dark or bright as it is.)"""
    return _best_chain(score, period_mm, step_mm, opts, kind=kind)[1]


def disc_alternatives(
    score: np.ndarray,
    period_mm: np.ndarray,
    step_mm: float,
    chain: list[int],
    opts: DiscOptions,
    kind: np.ndarray | None = None,
) -> list[tuple[float, float | None]]:
    """Per disc of ``chain`` (indices from :func:`choose_discs`): how much less the best chain
    scores without it — every candidate within ``alternative_window`` of the local period
    excluded — and how far (mm) from it the nearest disc of that other chain lies (None when
    none is within one period). A small margin says the profiles hold another chain nearly as
    good: the disc, and the two vertebrae it bounds, are uncertain."""
    best, _ = _best_chain(score, period_mm, step_mm, opts, kind=kind)
    out: list[tuple[float, float | None]] = []
    for m in chain:
        window = opts.alternative_window * float(period_mm[m]) / step_mm
        value, other = _best_chain(score, period_mm, step_mm, opts, exclude=(m - window, m + window), kind=kind)
        near = min((abs(c - m) * step_mm for c in other), default=None)
        if near is not None and near > float(period_mm[m]):
            near = None
        out.append((max(0.0, best - value), near))
    return out


def _best_chain(
    score: np.ndarray,
    period_mm: np.ndarray,
    step_mm: float,
    opts: DiscOptions,
    exclude: tuple[float, float] | None = None,
    kind: np.ndarray | None = None,
) -> tuple[float, list[int]]:
    """The best chain's value and indices (see :func:`choose_discs`), with no candidate inside
    ``exclude`` (index range) when given. Value -inf and no indices when there is no candidate."""
    sep = max(1, int(round(opts.min_separation_mm / step_mm)))
    cand, _ = find_peaks(score, height=opts.min_score, distance=sep)
    if exclude is not None:
        cand = cand[(cand < exclude[0]) | (cand > exclude[1])]
    if cand.size == 0:
        return float("-inf"), []
    pos = cand * step_mm
    gain = score[cand] - opts.disc_cost
    kinds = np.full(cand.size, 0.5) if kind is None else kind[cand]
    switch = opts.sign_switch_cost if kind is not None else 0.0
    n = cand.size
    # ext[j]: the best chain ending at j with at least one link, every link but the first charged
    # for a change of kind (ready to be extended: its last link is then inside the chain);
    # came_from[j] = (i, whether i starts that chain). The first and last links never pay: past
    # the end of a stretch the next disc may be of another kind (where disc heights change).
    ext = np.full(n, -np.inf)
    came_from = np.full((n, 2), -1)
    best_value, best_end = float(gain.max()), (int(np.argmax(gain)), -1, 0)  # (last, previous, chained)
    for j in range(1, n):
        d = pos[j] - pos[:j]
        t = period_mm[(cand[:j] + cand[j]) // 2].astype(np.float64)
        ok = d >= opts.spacing_range[0] * t
        if not ok.any():
            continue
        tail = np.where(ok, gain[j] - opts.period_penalty * np.log(np.maximum(d, 1e-9) / t) ** 2, -np.inf)
        first = gain[:j] + tail  # i starts the chain: the link i→j is its first
        later = ext[:j] + tail  # i has a predecessor
        charged = later - switch * np.abs(kinds[:j] - kinds[j])
        i_first, i_later = int(np.argmax(first)), int(np.argmax(charged))
        if first[i_first] >= charged[i_later]:
            ext[j], came_from[j] = first[i_first], (i_first, 1)
        else:
            ext[j], came_from[j] = charged[i_later], (i_later, 0)
        i_end = int(np.argmax(later))
        for value, end in ((first[i_first], (j, i_first, 0)), (later[i_end], (j, i_end, 1))):
            if value > best_value:
                best_value, best_end = float(value), end
    last, previous, chained = best_end
    chain = [last]
    if previous >= 0:
        chain.append(previous)
        while chained:  # previous has a predecessor: follow ext's choices
            previous, starts = (int(v) for v in came_from[previous])
            chain.append(previous)
            chained = not starts
    return best_value, [int(cand[k]) for k in chain[::-1]]


def fit_plane(
    array: np.ndarray,
    spacing: SpacingZYX,
    point: np.ndarray,
    normal: np.ndarray,
    radius_mm: float,
    opts: DiscOptions,
) -> tuple[np.ndarray, np.ndarray, float]:
    """The disc plane near (point, normal) that lies deepest in the trough between the two endplates.

    Planes are tried with a sagittal tilt up to ``max_tilt_deg`` (a third of it coronally) and
    shifts along their normal up to ``max_shift_mm``. For each tilt, the median HU over a disk of
    ``radius_mm`` is profiled along the normal; a plane's depth is how far the profile at it lies
    below the lower of its maxima within ``trough_reach_mm`` on either side (the two endplates), in
    units of the median's standard error (noise-free scans and noisy ones alike: a depth of 6 is a
    trough six times its own noise). Each degree of tilt and mm of shift costs ``tilt_cost_per_deg``
    and ``shift_cost_per_mm`` of depth; the best plane is refined between the grid's steps.

    A plane is scored by HU, not by a bone mask, because thin discs between dense endplates are
    as bright as the bone threshold: every tilt then holds the same share of "bone" and noise
    would choose it. Returns the point, the unit normal and the best depth (standard errors)."""
    g = np.arange(-radius_mm, radius_mm + 1e-9, 2.0)  # ≈2 mm between columns: enough to profile
    uu, vv = np.meshgrid(g, g, indexing="ij")
    keep = uu**2 + vv**2 <= radius_mm**2
    offsets = np.column_stack([uu[keep], vv[keep]])
    e1, e2 = plane_basis(normal)
    step = np.deg2rad(5.0)
    a = np.arange(-opts.max_tilt_deg, opts.max_tilt_deg + 1e-9, 5.0)
    b = np.arange(-opts.max_tilt_deg / 3, opts.max_tilt_deg / 3 + 1e-9, 5.0)
    aa, bb = (np.deg2rad(t).ravel() for t in np.meshgrid(a, b, indexing="ij"))
    n = _tilted(normal, e1, e2, aa, bb)
    f1, f2 = plane_basis(n)
    reach = int(round(opts.trough_reach_mm))
    h = np.arange(-opts.max_shift_mm - reach, opts.max_shift_mm + reach + 1e-9, 1.0)
    disk = offsets[:, :1, None] * f1[None, :, :] + offsets[:, 1:, None] * f2[None, :, :]  # (P, N, 3)
    samples = _sample(array, spacing, point + h[None, :, None, None] * n + disk[:, None, :, :])  # (P, H, N)
    median = np.median(samples, axis=0)
    spread = 1.4826 * np.median(np.abs(samples - median[None]), axis=0)
    se_hu = max(1.2533 * float(np.median(spread)) / np.sqrt(len(offsets)), 1e-3)
    profile = ndi.gaussian_filter1d(median.T, 1.0, axis=1)  # (N, H)
    shifts = h[reach : h.size - reach]
    depth = np.stack([_trough(row, reach)[reach : h.size - reach] for row in profile]) / se_hu
    gain = depth - opts.tilt_cost_per_deg * (np.abs(aa) + np.abs(bb))[:, None] * (180.0 / np.pi)
    gain = (gain - opts.shift_cost_per_mm * np.abs(shifts)[None, :]).reshape(a.size, b.size, shifts.size)
    ia, ib, j = np.unravel_index(int(np.argmax(gain)), gain.shape)
    best_tilt = gain.max(axis=2)
    alpha = np.deg2rad(a[ia]) + step * _vertex(best_tilt[:, ib], ia)
    beta = np.deg2rad(b[ib]) + step * _vertex(best_tilt[ia, :], ib)
    m = _tilted(normal, e1, e2, np.array([alpha]), np.array([beta]))[0]
    shift = float(shifts[j]) + _vertex(gain[ia, ib], j)
    return point + shift * m, m, float(depth.max())


def _tilted(normal: np.ndarray, e1: np.ndarray, e2: np.ndarray, sagittal: np.ndarray, coronal: np.ndarray) -> np.ndarray:
    """Unit normals tilted from ``normal`` by angles (radians) towards ``e2`` and ``e1``: (N, 3)."""
    n = (
        normal * (np.cos(sagittal) * np.cos(coronal))[:, None]
        + e2 * (np.sin(sagittal) * np.cos(coronal))[:, None]
        + e1 * np.sin(coronal)[:, None]
    )
    return n / np.linalg.norm(n, axis=1, keepdims=True)


def _vertex(y: np.ndarray, k: int) -> float:
    """Offset (in grid steps, within ±0.5) of the vertex of the parabola through y[k-1], y[k], y[k+1]."""
    if k == 0 or k == y.size - 1:
        return 0.0
    curvature = y[k - 1] - 2.0 * y[k] + y[k + 1]
    if curvature >= 0:
        return 0.0
    return float(np.clip(0.5 * (y[k - 1] - y[k + 1]) / curvature, -0.5, 0.5))


def place_disc(
    array: np.ndarray, spacing: SpacingZYX, point: np.ndarray, normal: np.ndarray, radius_mm: float, opts: DiscOptions
) -> tuple[np.ndarray, np.ndarray]:
    """The disc's plane: the fitted plane (:func:`fit_plane`) where its trough is clear, the plane
    normal to the centre line where it is not, and in between a blend weighted by the trough's
    depth across ``clear_trough_se`` (no switch: a disc a little clearer in one scan than in its
    repeat moves its plane a little, not from one rule to the other)."""
    fitted, fitted_normal, depth = fit_plane(array, spacing, point, normal, radius_mm, opts)
    lo, hi = opts.clear_trough_se
    w = float(np.clip((depth - lo) / max(hi - lo, 1e-9), 0.0, 1.0))
    blended = normal + w * (fitted_normal - normal)
    return point + w * (fitted - point), blended / np.linalg.norm(blended)


def find_discs(
    array: np.ndarray,
    spacing: SpacingZYX,
    work_bone: np.ndarray,
    work_spacing: SpacingZYX,
    line: CentreLine,
    opts: DiscOptions,
) -> tuple[list[Disc], dict]:
    """The discs along ``line`` (bottom to top) and what chose them (period, strength, candidates)."""
    profiles = spine_profiles(array, spacing, work_bone, work_spacing, line, opts)
    period, strength = local_period([profiles.core_hu, profiles.beside_hu], line.step_mm, opts)
    period = _trusted_period(period, strength, 2.0 * opts.depth_to_period * line.half_depth_mm, opts)
    dark, band = disc_signs(profiles, period, line.step_mm, opts, smooth_mm=max(1.0, 0.25 * spacing[0]))
    score, kind = np.maximum(dark, band), band_share(dark, band)
    lo, hi = opts.sign_switch_slices_mm
    blur = float(np.clip((spacing[0] - lo) / max(hi - lo, 1e-9), 0.0, 1.0))
    chain_opts = opts.model_copy(update={"sign_switch_cost": opts.sign_switch_cost * blur})
    chosen = choose_discs(score, period, line.step_mm, chain_opts, kind)
    alternatives = disc_alternatives(score, period, line.step_mm, chosen, chain_opts, kind)
    discs = []
    for m, (margin, other_mm) in zip(chosen, alternatives, strict=True):
        radius = float(np.clip(0.8 * line.half_depth_mm[m], 6.0, 16.0))
        point, normal = place_disc(array, spacing, line.points_mm[m], line.tangents[m], radius, opts)
        discs.append(Disc(point, normal, float(m * line.step_mm), float(score[m]), margin, other_mm))
    info = {
        "period_mm": period,
        "period_strength": strength,
        "score": score,
        "band_share": kind,
        "core_hu": profiles.core_hu,
        "beside_hu": profiles.beside_hu,
        "bone_fraction": profiles.bone_fraction,
    }
    return discs, info

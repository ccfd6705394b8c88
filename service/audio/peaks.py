"""Spectrogram -> landmark peaks: prominent local maxima, density-bounded."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy.ndimage import uniform_filter

from service.audio.params import FingerprintParams
from service.audio.running import running_max
from service.audio.spectrogram import frame_count, spectrogram_db

#: Frames of spectrogram processed at once; bounds memory to a few MB whatever the file length.
_CHUNK_FRAMES = 2048


@dataclass(frozen=True)
class Peaks:
    """Landmark peaks sorted by (frame, bin). All arrays have shape (n_peaks,)."""

    frames: np.ndarray  # int32, STFT frame index (time = frame * hop / rate)
    bins: np.ndarray  # int32, FFT bin (frequency = bin * rate / n_fft)
    prominence_db: np.ndarray  # float32, dB above the local mean spectrum

    def __len__(self) -> int:
        return len(self.frames)

    def span_s(self, frame_s: float) -> float:
        """Seconds from frame 0 to the end of the last frame holding a peak (one frame when
        there is none): the length the per-10-s lookup budgets scale with."""
        return (int(self.frames.max(initial=0)) + 1) * frame_s


def _keep_strongest_nearby(
    frames: np.ndarray,
    strength: np.ndarray,
    half_window: int,
    keep_count: int,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Mask of peaks with fewer than `keep_count` stronger peaks within +-half_window frames
    (and in the same group, when `groups` is given).

    `frames` must be sorted (by group first, when grouped), so each peak's later neighbours
    inside the window are the next few entries: every pair is compared once, as a block of
    (peak, k-th later neighbour) rows at a time rather than one pass per k, the stronger of
    the two counting against the other.
    """
    n = len(frames)
    if n == 0:
        return np.zeros(0, dtype=bool)
    # Ties are broken by index so that equal prominences give a deterministic, total order.
    rank_key = np.lexsort((np.arange(n), strength))
    order = np.empty(n, dtype=np.int64)
    order[rank_key] = np.arange(n)
    position = frames.astype(np.int64) - int(frames.min())
    if groups is not None:
        # One sorted key: each group after the previous one, further apart than the window.
        position += groups.astype(np.int64) * (int(position.max()) + half_window + 1)
    index = np.arange(n)
    window_end = np.searchsorted(position, position + half_window, side="right")
    width = int((window_end - index - 1).max())
    stronger = np.zeros(n, dtype=np.int64)
    if width <= 0:
        return stronger < keep_count
    later = np.arange(1, width + 1)
    rows = max(1, _PAIR_BLOCK // width)
    for first in range(0, n, rows):
        i = index[first : first + rows, None]
        j = i + later
        inside = j < window_end[first : first + rows, None]
        j = np.where(inside, j, 0)
        j_wins = order[j] > order[i]
        stronger[first : first + rows] += np.count_nonzero(j_wins & inside, axis=1)
        stronger += np.bincount(j[~j_wins & inside], minlength=n)
    return stronger < keep_count


#: (peak, neighbour) pairs compared per block: bounds the density limit's memory.
_PAIR_BLOCK = 1 << 18


def _density_mask(
    frames: np.ndarray, bins: np.ndarray, strength: np.ndarray, params: FingerprintParams
) -> np.ndarray:
    """Which candidates survive the density limit; `frames` sorted."""
    if params.density_bands <= 1:
        return _keep_strongest_nearby(frames, strength, params.density_frames, params.density_peaks)
    edges = np.geomspace(params.min_bin, params.max_bin + 1, params.density_bands + 1)[1:-1]
    band = np.searchsorted(edges, bins, side="right")
    order = np.lexsort((frames, band))  # stable within a band: frames stay sorted
    per_band = -(-params.density_peaks // params.density_bands)
    keep_sorted = _keep_strongest_nearby(
        frames[order], strength[order], params.density_frames, per_band, band[order]
    )
    keep = np.empty_like(keep_sorted)
    keep[order] = keep_sorted
    return keep


def _prominence(spec: np.ndarray, params: FingerprintParams) -> np.ndarray:
    """How far each cell of the searched band stands above the local mean spectrum (dB):
    frames x (max_bin - min_bin + 1)."""
    band = spec[:, params.min_bin : params.max_bin + 1]
    local_mean = uniform_filter(
        band, size=(2 * params.mean_frames + 1, 2 * params.mean_bins + 1), mode="nearest"
    )
    return band - local_mean


def _candidate_peaks(
    spec: np.ndarray, prominence: np.ndarray, params: FingerprintParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frame, bin, prominence) of every prominent local maximum of `spec` (frames x bins),
    given its `_prominence`."""
    band = spec[:, params.min_bin : params.max_bin + 1]
    local_max = running_max(band, (2 * params.peak_frames + 1, 2 * params.peak_bins + 1))
    is_peak = (
        (band == local_max) & (band > params.floor_db) & (prominence >= params.peak_over_mean_db)
    )
    f, b = np.nonzero(is_peak)
    return f.astype(np.int32), (b + params.min_bin).astype(np.int32), prominence[f, b]


#: Receives each chunk's own spectrogram frames: (first frame index, frames x bins dB).
SpectrogramSink = Callable[[int, np.ndarray], None]


#: Picks the candidate peaks of one chunk's spectrogram (frames x bins, dB) and its
#: `_prominence` (computed once per chunk, shared by the pickers): (frame, bin, prominence,
#: strength), where strength ranks them for the density limit.
CandidatePicker = Callable[
    [np.ndarray, np.ndarray, FingerprintParams],
    tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
]


def _prominent_candidates(
    spec: np.ndarray, prominence: np.ndarray, params: FingerprintParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    f, b, p = _candidate_peaks(spec, prominence, params)
    return f, b, p, p


def find_peaks(
    samples: np.ndarray,
    params: FingerprintParams,
    on_spectrogram: SpectrogramSink | None = None,
) -> Peaks:
    """Landmark peaks of a mono signal at `params.sample_rate_hz`.

    A peak is the maximum of its +-peak_frames x +-peak_bins neighbourhood, stands
    `peak_over_mean_db` above the local mean (an adaptive threshold that follows the loudness
    of each region of the time-frequency plane, so it is gain-invariant) and above the
    silence floor. Of those, a peak survives if fewer than `density_peaks` more prominent ones
    lie within +-density_frames.
    The signal is processed in chunks with a halo wide enough for both filters, so the result
    equals the whole-signal computation while memory stays bounded.

    `on_spectrogram`, when given, is called with every chunk's own frames (not its halo), in
    order and each frame once, so another per-frame analysis (the band envelopes) can reuse
    this STFT instead of computing a second one. They are read-only: the peaks are picked from
    the same array afterwards.
    """
    return _pick_peaks(samples, params, [_prominent_candidates], on_spectrogram)[0]


def find_sustained_peaks(samples: np.ndarray, params: FingerprintParams) -> Peaks:
    """A query's peaks for when noise hides its song's: local maxima of a smaller
    neighbourhood (`query_sustained_peak_frames` x `query_sustained_peak_bins`), ranked for
    the density limit by how steadily they last rather than by prominence alone.

    Under babble the loudest peaks of a clip are speech: harmonics that glide from frame to
    frame and, in the index's wide neighbourhood, outshine the song's peaks beside them. The
    song's peaks that the index holds are mostly notes that hold their frequency. Measured on
    the development corpus's babble clips at 0 dB (10 s; medians): 25 % of the song's index
    peaks are among the clip's prominent local maxima in the index's neighbourhood, 19 %
    among the 200 most prominent of them; in the smaller neighbourhood, 29 % among the 300
    steadiest. On clean clips the same ranking keeps fewer of the song's peaks than
    prominence does, so the first tier keeps the index's picking and only the second tier
    (core/identify/identify.py) uses these.
    """
    return _pick_peaks(samples, params, [_sustained_candidates])[0]


def sustained_peaks_at_phases(samples: np.ndarray, params: FingerprintParams) -> list[Peaks]:
    """find_sustained_peaks of the clip started later by each of params.hop_phase_shifts(),
    each on its own frame grid (its frame f covers samples shift + f * hop onwards).

    Under heavy noise the peaks that win their neighbourhoods change with where the frame
    grid falls, so each start is another draw of the song's surviving peaks (params.py,
    query_hop_phases)."""
    return [find_sustained_peaks(samples[shift:], params) for shift in params.hop_phase_shifts()]


def find_peaks_and_sustained(
    samples: np.ndarray,
    params: FingerprintParams,
    on_spectrogram: SpectrogramSink | None = None,
) -> tuple[Peaks, Peaks]:
    """find_peaks and find_sustained_peaks from one STFT (a clip to identify needs both)."""
    peaks, sustained = _pick_peaks(
        samples, params, [_prominent_candidates, _sustained_candidates], on_spectrogram
    )
    return peaks, sustained


def _sustained_candidates(
    spec: np.ndarray, prominence: np.ndarray, params: FingerprintParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    narrow = replace(
        params,
        peak_frames=params.query_sustained_peak_frames,
        peak_bins=params.query_sustained_peak_bins,
    )
    f, b, p = _candidate_peaks(spec, prominence, narrow)
    strength = p / params.query_prominence_db_per_steady_frame + _steadiness(spec, f, b, params)
    return f, b, p, strength


def _steadiness(
    spec: np.ndarray, frames: np.ndarray, bins: np.ndarray, params: FingerprintParams
) -> np.ndarray:
    """For each peak, the frames within +-query_steady_frames in which its bin is still a
    spectral maximum (at least its two neighbours) within query_steady_within_db of the peak:
    a held note scores them all, a gliding or short sound few."""
    last_frame, last_bin = spec.shape[0] - 1, spec.shape[1] - 1
    level = spec[frames, bins]
    below, above = np.maximum(bins - 1, 0), np.minimum(bins + 1, last_bin)
    steady = np.zeros(len(frames), dtype=np.float32)
    span = params.query_steady_frames
    for shift in (*range(-span, 0), *range(1, span + 1)):
        t = np.clip(frames + shift, 0, last_frame)
        value = spec[t, bins]
        steady += (
            (value >= spec[t, below])
            & (value >= spec[t, above])
            & (value >= level - params.query_steady_within_db)
        )
    return steady


def _pick_peaks(
    samples: np.ndarray,
    params: FingerprintParams,
    pickers: Sequence[CandidatePicker],
    on_spectrogram: SpectrogramSink | None = None,
) -> list[Peaks]:
    """For each picker, its candidates density-limited by their strength, chunk by chunk,
    all from one STFT."""
    total = frame_count(len(samples), params)
    # Candidates in the outer halo are needed (complete) for the density test of the inner
    # ones, so the spectrogram reaches out by both filter sizes plus the density window.
    halo = params.density_frames
    filter_halo = max(params.peak_frames, params.mean_frames)
    out: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in pickers]
    for start in range(0, total, _CHUNK_FRAMES):
        stop = min(total, start + _CHUNK_FRAMES)
        first = max(0, start - halo - filter_halo)
        last = min(total, stop + halo + filter_halo)
        spec = spectrogram_db(samples, params, first, last - first)
        if on_spectrogram is not None:
            own = spec[start - first : stop - first]
            own.flags.writeable = False
            on_spectrogram(start, own)
        prominence = _prominence(spec, params)
        for pick, parts in zip(pickers, out, strict=True):
            f, b, p, strength = pick(spec, prominence, params)
            f += first
            usable = (f >= start - halo) & (f < stop + halo)
            f, b, p, strength = f[usable], b[usable], p[usable], strength[usable]
            order = np.lexsort((b, f))
            f, b, p, strength = f[order], b[order], p[order], strength[order]
            keep = _density_mask(f, b, strength, params)
            keep &= (f >= start) & (f < stop)
            parts.append((f[keep], b[keep], p[keep]))
    return [_joined(parts) for parts in out]


def _joined(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Peaks:
    if not parts:
        empty = np.empty(0, dtype=np.int32)
        return Peaks(empty, empty.copy(), np.empty(0, dtype=np.float32))
    frames, bins, prominence = (np.concatenate(c) for c in zip(*parts, strict=True))
    return Peaks(frames, bins, prominence.astype(np.float32))


def thin_peaks(peaks: Peaks, params: FingerprintParams) -> Peaks:
    """The subset of `peaks` (picked at a higher density) that `params`' density limit keeps.

    Nearly, not exactly, what find_peaks would pick at that density: a stronger candidate the
    denser pick had already dropped no longer counts against its neighbours. Queries use it to
    look up their index-density landmarks first and the rest only when those do not suffice.
    """
    keep = _density_mask(peaks.frames, peaks.bins, peaks.prominence_db, params)
    return Peaks(peaks.frames[keep], peaks.bins[keep], peaks.prominence_db[keep])

"""Spectrogram -> landmark peaks: prominent local maxima, density-bounded."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import maximum_filter, uniform_filter

from service.audio.params import FingerprintParams
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


def _keep_strongest_per_block(
    frames: np.ndarray, strength: np.ndarray, block_frames: int, per_block: int
) -> np.ndarray:
    """Boolean mask keeping the `per_block` strongest peaks of each block of frames."""
    blocks = frames // block_frames
    order = np.lexsort((-strength, blocks))
    sorted_blocks = blocks[order]
    first_of_block = np.searchsorted(sorted_blocks, sorted_blocks, side="left")
    rank = np.arange(len(order)) - first_of_block
    keep = np.zeros(len(frames), dtype=bool)
    keep[order[rank < per_block]] = True
    return keep


def _peaks_in_chunk(
    spec: np.ndarray, params: FingerprintParams, lo: int, hi: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Peaks of `spec` (frames x bins) whose frame lies in [lo, hi) of this chunk."""
    band = spec[:, params.min_bin : params.max_bin + 1]
    local_max = maximum_filter(
        band, size=(2 * params.peak_frames + 1, 2 * params.peak_bins + 1), mode="nearest"
    )
    local_mean = uniform_filter(
        band, size=(2 * params.mean_frames + 1, 2 * params.mean_bins + 1), mode="nearest"
    )
    prominence = band - local_mean
    is_peak = (
        (band == local_max) & (band > params.floor_db) & (prominence >= params.peak_over_mean_db)
    )
    is_peak[:lo] = False
    is_peak[hi:] = False
    f, b = np.nonzero(is_peak)
    return f.astype(np.int32), (b + params.min_bin).astype(np.int32), prominence[f, b]


def find_peaks(samples: np.ndarray, params: FingerprintParams) -> Peaks:
    """Landmark peaks of a mono signal at `params.sample_rate_hz`.

    A peak is the maximum of its +-peak_frames x +-peak_bins neighbourhood, stands
    `peak_over_mean_db` above the local mean (an adaptive threshold that follows the loudness
    of each region of the time-frequency plane, so it is gain-invariant) and above the
    silence floor. Of those, the `peaks_per_block` most prominent of each block survive.
    The signal is processed in chunks with a halo wide enough for both filters, so the result
    equals the whole-signal computation while memory stays bounded.
    """
    total = frame_count(len(samples), params)
    halo = max(params.peak_frames, params.mean_frames)
    chunk = max(params.block_frames, _CHUNK_FRAMES // params.block_frames * params.block_frames)
    out_f: list[np.ndarray] = []
    out_b: list[np.ndarray] = []
    out_p: list[np.ndarray] = []
    for start in range(0, total, chunk):
        first = max(0, start - halo)
        stop = min(total, start + chunk + halo)
        spec = spectrogram_db(samples, params, first, stop - first)
        f, b, p = _peaks_in_chunk(spec, params, start - first, min(start + chunk, total) - first)
        f += first
        keep = _keep_strongest_per_block(f, p, params.block_frames, params.peaks_per_block)
        out_f.append(f[keep])
        out_b.append(b[keep])
        out_p.append(p[keep])
    if not out_f:
        empty = np.empty(0, dtype=np.int32)
        return Peaks(empty, empty.copy(), np.empty(0, dtype=np.float32))
    frames = np.concatenate(out_f)
    bins = np.concatenate(out_b)
    prominence = np.concatenate(out_p).astype(np.float32)
    order = np.lexsort((bins, frames))
    return Peaks(frames[order], bins[order], prominence[order])

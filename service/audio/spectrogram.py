"""Samples -> log-magnitude spectrogram."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.fft
from numpy.lib.stride_tricks import sliding_window_view

from service.audio.params import FingerprintParams


@lru_cache(maxsize=8)
def _window(n_fft: int) -> tuple[np.ndarray, float]:
    window = np.hanning(n_fft + 1)[:-1].astype(np.float32)  # periodic Hann
    # A full-scale sine peaks at sum(window) / 2 in the magnitude spectrum: 0 dB by definition.
    return window, float(window.sum() / 2.0)


def frame_count(n_samples: int, params: FingerprintParams) -> int:
    """Frames a signal of `n_samples` yields (the last partial window is dropped)."""
    if n_samples < params.n_fft:
        return 0
    return 1 + (n_samples - params.n_fft) // params.hop


def spectrogram_db(
    samples: np.ndarray,
    params: FingerprintParams,
    first_frame: int = 0,
    n_frames: int | None = None,
) -> np.ndarray:
    """Log-magnitude STFT of frames [first_frame, first_frame + n_frames) of `samples`.

    Returns float32 of shape (n_frames, params.n_fft // 2 + 1) in dB relative to a full-scale
    sine. Frame f covers samples [f * hop, f * hop + n_fft). Computing a range of frames lets
    callers bound memory on long files.
    """
    total = frame_count(len(samples), params)
    if n_frames is None:
        n_frames = total - first_frame
    n_frames = max(0, min(n_frames, total - first_frame))
    n_bins = params.n_fft // 2 + 1
    if n_frames == 0:
        return np.empty((0, n_bins), dtype=np.float32)
    start = first_frame * params.hop
    stop = start + (n_frames - 1) * params.hop + params.n_fft
    frames = sliding_window_view(samples[start:stop], params.n_fft)[:: params.hop]
    window, reference = _window(params.n_fft)
    spectrum = scipy.fft.rfft(frames * window, axis=1)
    # rfft of float32 frames is complex64, so its magnitude is float32 already. In-place steps:
    # the same float32 operations as out-of-place ones (bit-identical dB), without the copies.
    magnitude = np.abs(spectrum).astype(np.float32, copy=False)
    magnitude *= 1.0 / reference
    np.maximum(magnitude, 1e-10, out=magnitude)
    np.log10(magnitude, out=magnitude)
    magnitude *= 20.0
    return magnitude

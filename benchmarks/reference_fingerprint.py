"""Reference peak picking: scipy's maximum filter and out-of-place dB.

`legacy_fingerprinting()` swaps these two reference pieces into service.audio.peaks for the
reference column of the side-by-side benchmark; the pipeline around them is shared. Not used by
the service.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.ndimage import maximum_filter

from service.audio import peaks
from service.audio.params import FingerprintParams
from service.audio.spectrogram import _window, frame_count


def spectrogram_db_out_of_place(
    samples: np.ndarray,
    params: FingerprintParams,
    first_frame: int = 0,
    n_frames: int | None = None,
) -> np.ndarray:
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
    spectrum = np.fft.rfft(frames * window, axis=1)
    magnitude = np.abs(spectrum).astype(np.float32)
    magnitude *= 1.0 / reference
    np.maximum(magnitude, 1e-10, out=magnitude)
    return (20.0 * np.log10(magnitude)).astype(np.float32, copy=False)


def scipy_maximum_filter(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return maximum_filter(x, size=size, mode="nearest")


@contextmanager
def legacy_fingerprinting() -> Iterator[None]:
    """Within the block, find_peaks uses scipy's maximum_filter and the out-of-place dB."""
    saved = peaks.running_max, peaks.spectrogram_db
    peaks.running_max, peaks.spectrogram_db = scipy_maximum_filter, spectrogram_db_out_of_place
    try:
        yield
    finally:
        peaks.running_max, peaks.spectrogram_db = saved

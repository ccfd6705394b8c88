"""Peaks and band envelopes from one STFT equal find_peaks and band_envelopes, bit for bit.

Indexing takes both from the peak finder's chunks (service.audio.envelopes.peaks_and_envelopes);
the stored envelopes must not depend on which path computed them, nor the landmarks either.
"""

from __future__ import annotations

import numpy as np
import pytest

from service.audio import peaks as peaks_module
from service.audio.envelopes import DEFAULT_ENVELOPE, band_envelopes, peaks_and_envelopes
from service.audio.params import DEFAULT_PARAMS, FingerprintParams
from service.audio.peaks import find_peaks
from service.audio.spectrogram import frame_count

RATE = DEFAULT_PARAMS.sample_rate_hz


def _mixture(seconds: float, seed: int = 5) -> np.ndarray:
    """Gliding tones, noise bursts and clicks: peaks and band onsets everywhere, chunk edges
    included, so a frame taken from the wrong chunk or halo would show."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    out = np.zeros(n)
    for base in (180.0, 430.0, 910.0, 1700.0, 3100.0):
        freq = base * (1.0 + 0.05 * np.sin(2 * np.pi * t / rng.uniform(5.0, 20.0)))
        gate = 0.5 + 0.5 * np.sign(np.sin(2 * np.pi * t / rng.uniform(0.3, 1.5)))
        out += 0.1 * gate * np.sin(2 * np.pi * np.cumsum(freq) / RATE)
    for start in rng.integers(0, max(1, n - RATE // 2), max(1, n // RATE)):
        length = int(rng.integers(100, RATE // 2))
        out[start : start + length] += 0.2 * rng.standard_normal(len(out[start : start + length]))
    out[rng.integers(0, n, max(1, n // 800))] += 0.9
    return (out / np.abs(out).max()).astype(np.float32)


def _assert_one_pass_equals_separate(samples: np.ndarray, params: FingerprintParams) -> None:
    peaks, envelopes = peaks_and_envelopes(samples, params)
    expected = find_peaks(samples, params)
    assert np.array_equal(peaks.frames, expected.frames)
    assert np.array_equal(peaks.bins, expected.bins)
    assert np.array_equal(peaks.prominence_db, expected.prominence_db)
    assert envelopes.dtype == np.int8
    assert envelopes.shape == (frame_count(len(samples), params), DEFAULT_ENVELOPE.bands)
    assert np.array_equal(envelopes, band_envelopes(samples, params))


@pytest.mark.parametrize("params", [DEFAULT_PARAMS, DEFAULT_PARAMS.for_queries()])
def test_one_pass_equals_separate_over_many_chunks(params: FingerprintParams) -> None:
    samples = _mixture(300.0)
    assert frame_count(len(samples), params) > 4 * peaks_module._CHUNK_FRAMES
    _assert_one_pass_equals_separate(samples, params)


def test_one_pass_equals_separate_with_tiny_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    # Chunks shorter than the halo: every frame's levels still come from exactly one chunk.
    monkeypatch.setattr(peaks_module, "_CHUNK_FRAMES", 37)
    _assert_one_pass_equals_separate(_mixture(20.0), DEFAULT_PARAMS)


def test_one_pass_equals_separate_within_one_chunk() -> None:
    samples = _mixture(12.0)
    assert 0 < frame_count(len(samples), DEFAULT_PARAMS) < peaks_module._CHUNK_FRAMES
    _assert_one_pass_equals_separate(samples, DEFAULT_PARAMS)


def test_one_pass_without_frames() -> None:
    samples = _mixture((DEFAULT_PARAMS.n_fft - 1) / RATE)
    assert frame_count(len(samples), DEFAULT_PARAMS) == 0
    peaks, envelopes = peaks_and_envelopes(samples, DEFAULT_PARAMS)
    assert len(peaks) == 0
    assert envelopes.shape == (0, DEFAULT_ENVELOPE.bands)
    _assert_one_pass_equals_separate(samples, DEFAULT_PARAMS)

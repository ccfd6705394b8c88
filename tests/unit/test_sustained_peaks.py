"""The second tier's peaks (peaks.find_sustained_peaks): held notes before gliding speech."""

from __future__ import annotations

import numpy as np
import pytest

from service.audio import peaks as peaks_module
from service.audio.analysis import KEEP_SAMPLES_MAX_S, analyse_query
from service.audio.envelopes import DEFAULT_ENVELOPE, EnvelopeCollector, band_envelopes
from service.audio.params import DEFAULT_PARAMS
from service.audio.peaks import (
    _steadiness,
    find_peaks,
    find_peaks_and_sustained,
    find_sustained_peaks,
    sustained_peaks_at_phases,
)
from service.audio.spectrogram import frame_count
from tests.audio_fixtures import encode, synth_song

RATE = DEFAULT_PARAMS.sample_rate_hz
QUERY = DEFAULT_PARAMS.for_queries()
BIN_HZ = RATE / DEFAULT_PARAMS.n_fft


def test_a_held_line_is_steady_and_a_glide_is_not():
    spec = np.full((40, 300), -60.0, dtype=np.float32)
    spec[:, 50] = -10.0  # a held note
    frames = np.arange(40)
    spec[frames, 100 + 3 * frames] = -10.0  # a glide: three bins a frame
    steady = _steadiness(spec, np.array([20, 20]), np.array([50, 160]), QUERY)
    assert steady.tolist() == [2 * QUERY.query_steady_frames, 0]


def test_a_note_fading_out_is_steady_only_while_it_lasts():
    spec = np.full((40, 300), -60.0, dtype=np.float32)
    spec[:22, 50] = -10.0
    spec[22:, 50] = -20.0  # 10 dB down after frame 21: beyond query_steady_within_db
    steady = _steadiness(spec, np.array([20]), np.array([50]), QUERY)
    assert steady.tolist() == [QUERY.query_steady_frames + 1]


def _tone_under_glides(seconds: float = 8.0) -> tuple[np.ndarray, int]:
    """A held 1 kHz tone under louder glides crowding its band (610-1500 Hz), as speech
    harmonics crowd a song's notes under babble; (samples, the tone's bin)."""
    t = np.arange(int(seconds * RATE)) / RATE
    signal = 0.05 * np.sin(2 * np.pi * 1000.0 * t)
    rng = np.random.default_rng(5)
    length = int(0.12 * RATE)
    window = np.hanning(length)
    for start in rng.integers(0, len(t) - length, size=int(seconds * 40)):
        f0 = rng.uniform(650.0, 1400.0)
        rise = rng.choice([-1.0, 1.0]) * rng.uniform(800.0, 1600.0)  # Hz per second
        local = np.arange(length) / RATE
        phase = 2 * np.pi * (f0 * local + rise * local**2 / 2)
        signal[start : start + length] += 0.2 * window * np.sin(phase)
    return signal.astype(np.float32), round(1000.0 / BIN_HZ)


def test_a_held_tone_outranks_louder_glides():
    samples, tone_bin = _tone_under_glides()
    on_tone = lambda p: int(np.sum(np.abs(p.bins - tone_bin) <= 1))  # noqa: E731
    sustained = find_sustained_peaks(samples, QUERY)
    prominent = find_peaks(samples, QUERY)
    assert on_tone(sustained) >= 2 * max(on_tone(prominent), 1), (
        on_tone(sustained),
        on_tone(prominent),
    )


def test_chunked_sustained_picking_equals_whole_signal(monkeypatch):
    samples = synth_song(3, 12.0, rate_hz=RATE)
    whole = find_sustained_peaks(samples, QUERY)
    monkeypatch.setattr(peaks_module, "_CHUNK_FRAMES", 50)
    chunked = find_sustained_peaks(samples, QUERY)
    np.testing.assert_array_equal(whole.frames, chunked.frames)
    np.testing.assert_array_equal(whole.bins, chunked.bins)
    np.testing.assert_array_equal(whole.prominence_db, chunked.prominence_db)


def test_one_stft_gives_both_peak_sets_and_the_envelopes(monkeypatch):
    """A clip's analysis (analyse_query) takes its peaks, sustained peaks and band envelopes
    from one STFT; each equals its own computation, across chunk boundaries too."""
    samples = synth_song(9, 12.0, rate_hz=RATE)
    monkeypatch.setattr(peaks_module, "_CHUNK_FRAMES", 64)
    collector = EnvelopeCollector(frame_count(len(samples), QUERY), QUERY, DEFAULT_ENVELOPE)
    peaks, sustained = find_peaks_and_sustained(samples, QUERY, collector)
    for got, alone in (
        (peaks, find_peaks(samples, QUERY)),
        (sustained, find_sustained_peaks(samples, QUERY)),
    ):
        np.testing.assert_array_equal(got.frames, alone.frames)
        np.testing.assert_array_equal(got.bins, alone.bins)
        np.testing.assert_array_equal(got.prominence_db, alone.prominence_db)
    np.testing.assert_array_equal(
        collector.envelopes(), band_envelopes(samples, QUERY, DEFAULT_ENVELOPE)
    )


def _stronger_nearby_by_brute_force(frames, strength, half_window, groups):
    n = len(frames)
    rank = np.lexsort((np.arange(n), strength))
    order = np.empty(n, dtype=np.int64)
    order[rank] = np.arange(n)
    near = (np.abs(frames[:, None] - frames[None, :]) <= half_window) & (
        groups[:, None] == groups[None, :]
    )
    return (near & (order[None, :] > order[:, None])).sum(axis=1)


def test_the_density_limit_counts_exactly_the_stronger_neighbours(monkeypatch):
    """Against every pair compared by brute force, ties in strength included, with blocks
    small enough that the pairs span several of them."""
    monkeypatch.setattr(peaks_module, "_PAIR_BLOCK", 64)
    rng = np.random.default_rng(2)
    for _ in range(20):
        n = int(rng.integers(1, 300))
        groups = np.sort(rng.integers(0, 4, n))
        frames = np.concatenate(
            [np.sort(rng.integers(0, 200, np.count_nonzero(groups == g))) for g in range(4)]
        )
        strength = rng.integers(0, 12, n).astype(np.float32)  # many ties
        expected = _stronger_nearby_by_brute_force(frames, strength, 16, groups) < 5
        got = peaks_module._keep_strongest_nearby(frames, strength, 16, 5, groups)
        np.testing.assert_array_equal(got, expected)


def test_each_hop_phase_is_the_clip_analysed_from_that_many_samples_later():
    """Phase k's frame 0 starts hop_phase_shifts()[k] samples into the clip (the start_s its
    variant reports matches from): a clip that starts with that many samples of something
    else gives, at that phase, exactly the peaks of the rest."""
    music = synth_song(9, 6.0, RATE)
    shifts = QUERY.hop_phase_shifts()
    assert len(shifts) == QUERY.query_hop_phases - 1
    for k, shift in enumerate(shifts):
        lead = np.random.default_rng(k).standard_normal(shift).astype(np.float32) * 0.1
        phased = sustained_peaks_at_phases(np.concatenate([lead, music]), QUERY)[k]
        alone = find_sustained_peaks(music, QUERY)
        assert len(alone) > 50
        np.testing.assert_array_equal(phased.frames, alone.frames)
        np.testing.assert_array_equal(phased.bins, alone.bins)


def test_a_short_clip_keeps_its_samples_for_other_hop_phases(tmp_path):
    """analyse_query keeps a clip's samples (identify analyses it again at other hop phases
    only if its own leave it undecided), not a long file's nor a stream segment's."""
    short = encode(synth_song(10, 8.0), tmp_path / "short", "mp3")
    clip = analyse_query(short, DEFAULT_PARAMS)
    assert clip.samples is not None
    assert len(clip.samples) == pytest.approx(8.0 * RATE, abs=0.05 * RATE)
    assert analyse_query(short, DEFAULT_PARAMS, keep_samples=False).samples is None
    long = encode(synth_song(11, KEEP_SAMPLES_MAX_S + 2.0), tmp_path / "long", "ogg")
    assert analyse_query(long, DEFAULT_PARAMS).samples is None

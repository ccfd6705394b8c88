"""Band envelopes and the envelope check: frame grid, invariances, and what they confirm."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import resample_poly

from service.audio.envelopes import DEFAULT_ENVELOPE, band_envelopes
from service.audio.params import DEFAULT_PARAMS
from service.audio.spectrogram import frame_count
from service.match.envelopes import (
    EnvelopeCheckParams,
    at_speed,
    correlations,
    envelope_z,
    score_of,
)
from tests.audio_fixtures import synth_song

RATE = DEFAULT_PARAMS.sample_rate_hz
CHECK = EnvelopeCheckParams()


def confirms(z: float | None, tried: int = CHECK.candidates) -> bool:
    """Whether a z-score would confirm a candidate among `tried` at the default 0.99."""
    return z is not None and 1.0 - 10.0 ** score_of(z, tried, CHECK).chance_log10 >= 0.99


@pytest.fixture(scope="module")
def song() -> np.ndarray:
    return synth_song(31, 90.0, RATE)


def test_envelopes_are_on_the_landmarks_frame_grid(song: np.ndarray) -> None:
    env = band_envelopes(song, DEFAULT_PARAMS)
    assert env.dtype == np.int8
    assert env.shape == (frame_count(len(song), DEFAULT_PARAMS), DEFAULT_ENVELOPE.bands)
    # An excerpt starting on a frame boundary has the song's envelope from that frame on,
    # away from the edges the detrending window reaches past.
    start = 700
    part = band_envelopes(song[start * DEFAULT_PARAMS.hop :][: 20 * RATE], DEFAULT_PARAMS)
    inner = slice(40, len(part) - 40)
    diff = np.abs(part[inner].astype(int) - env[start:][: len(part)][inner].astype(int))
    assert diff.max() <= 1


def test_envelopes_ignore_gain(song: np.ndarray) -> None:
    loud = band_envelopes(song, DEFAULT_PARAMS).astype(int)
    quiet = band_envelopes(song * 0.05, DEFAULT_PARAMS).astype(int)
    assert np.abs(loud - quiet).max() <= 1


def test_correlations_match_a_direct_pearson_coefficient() -> None:
    rng = np.random.default_rng(3)
    song = rng.standard_normal((200, 6))
    query = rng.standard_normal((50, 6))
    got = correlations(query, song)
    assert got.shape == (151,)
    for p in (0, 17, 150):
        a = query - query.mean(axis=0)
        b = song[p : p + 50] - song[p : p + 50].mean(axis=0)
        expected = (a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum())
        assert got[p] == pytest.approx(expected, abs=1e-9)


def _noisy_excerpt(song: np.ndarray, start_frame: int, seconds: float, snr_db: float) -> np.ndarray:
    """An excerpt of `song` under another song at `snr_db`: music over music, the hardest
    case for landmarks (the other song's peaks are as prominent as the right one's)."""
    clip = song[start_frame * DEFAULT_PARAMS.hop :][: int(seconds * RATE)].astype(np.float64)
    noise = synth_song(977, seconds, RATE)[: len(clip)].astype(np.float64)
    noise *= np.sqrt((clip**2).mean() / (noise**2).mean()) / 10 ** (snr_db / 20)
    return (clip + noise).astype(np.float32)


def test_the_true_offset_stands_out_under_heavy_noise(song: np.ndarray) -> None:
    env = band_envelopes(song, DEFAULT_PARAMS).astype(np.float32)
    start = 1200
    query = band_envelopes(_noisy_excerpt(song, start, 10.0, -3.0), DEFAULT_PARAMS)
    z = envelope_z(query.astype(np.float32), env, start, CHECK)
    assert confirms(z)
    # The same clip against an unrelated song, at any offset, stays among chance.
    other = band_envelopes(synth_song(32, 90.0, RATE), DEFAULT_PARAMS).astype(np.float32)
    for at in (0, 900, 1500):
        z_other = envelope_z(query.astype(np.float32), other, at, CHECK)
        assert z_other is not None and not confirms(z_other, tried=1)


def test_a_clip_played_fast_is_compared_on_the_songs_time_grid(song: np.ndarray) -> None:
    env = band_envelopes(song, DEFAULT_PARAMS).astype(np.float32)
    start = 1200
    excerpt = song[start * DEFAULT_PARAMS.hop :][: 12 * RATE].astype(np.float64)
    # Played 3 % fast, as a radio edit does: tempo and pitch together.
    fast = resample_poly(excerpt, 100, 103).astype(np.float32)
    query = band_envelopes(fast, DEFAULT_PARAMS)
    assert at_speed(query, 1.0) is query
    on_song_grid = at_speed(query, 1.03)
    assert len(on_song_grid) == int(len(query) * 1.03)
    z_as_recorded = envelope_z(query.astype(np.float32), env, start, CHECK)
    z = envelope_z(on_song_grid.astype(np.float32), env, start, CHECK)
    assert confirms(z)
    # As recorded, its beats drift away from the song's along the clip.
    assert z_as_recorded is not None and z is not None and z > z_as_recorded + 2.0


def test_too_little_overlap_or_background_is_no_verdict(song: np.ndarray) -> None:
    env = band_envelopes(song, DEFAULT_PARAMS).astype(np.float32)
    query = env[100:400]
    # The clip would start past the song's end, or the song is barely longer than the clip.
    assert envelope_z(query, env, len(env) - 20, CHECK) is None
    assert envelope_z(query, env[:320], 10, CHECK) is None
    # A clip hanging over the song's start is compared on the part inside.
    z = envelope_z(env[:300], env[100:], -100, CHECK)
    assert confirms(z)


def test_score_pays_for_every_candidate_tried_and_its_calibration() -> None:
    one, three = score_of(4.0, 1, CHECK), score_of(4.0, 3, CHECK)
    assert one.chance_log10 == pytest.approx(-4.5 + CHECK.calibration_log10, abs=0.05)
    assert three.chance_log10 == pytest.approx(one.chance_log10 + np.log10(3))
    # Three candidates: z 4.05 confirms, 3.95 does not (the threshold eight had before the
    # calibration moved by log10(8 / 3)); one candidate: 3.75 does, 3.7 does not.
    assert confirms(4.05) and not confirms(3.95)
    assert confirms(3.75, tried=1) and not confirms(3.7, tried=1)

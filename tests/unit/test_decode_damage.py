"""Damaged audio keeps its clock: what could not be decoded becomes silence of its length, is
listed in `damaged_spans`, and a file that is mostly damage is refused.

The files are encoded by ffmpeg here (MP3, AAC in MP4, AAC + H.264 in MPEG-TS as MediaLive
writes it) and their middle third overwritten with random bytes: for MPEG-TS only the packets'
payload, as a damaged broadcast capture has it.
"""

from __future__ import annotations

import numpy as np
import pytest

from service.audio.decode import MAX_DAMAGED_SHARE, decode_audio
from service.errors import UndecodableAudio
from tests.audio_fixtures import encode, synth_song

RATE = 8000
LENGTH_S = 30.0
FORMATS = ["mp3", "aac_m4a", "ts_video"]


def damage(data: bytes, fmt: str, first: float, last: float, seed: int = 1) -> bytes:
    """`data` with the share [first, last) of it overwritten with random bytes."""
    out = bytearray(data)
    rng = np.random.default_rng(seed)
    if fmt == "ts_video":
        packets = len(out) // 188
        for k in range(int(packets * first), int(packets * last)):
            out[k * 188 + 4 : (k + 1) * 188] = rng.bytes(184)
    else:
        a, b = int(len(out) * first), int(len(out) * last)
        out[a:b] = rng.bytes(b - a)
    return bytes(out)


@pytest.fixture(scope="module")
def encoded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("damage")
    song = synth_song(3, LENGTH_S)
    return {fmt: encode(song, folder / fmt, fmt).read_bytes() for fmt in FORMATS}


def _envelope(samples: np.ndarray) -> np.ndarray:
    """RMS per 0.25 s."""
    hop = RATE // 4
    n = len(samples) // hop
    return np.sqrt((samples[: n * hop].reshape(n, hop) ** 2).mean(axis=1))


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_damaged_middle_third_is_silence_of_its_length_and_is_reported(encoded, fmt):
    clean = decode_audio(encoded[fmt], RATE)
    audio = decode_audio(damage(encoded[fmt], fmt, 1 / 3, 2 / 3), RATE)
    # The clock is kept: the same length, the same start.
    assert audio.duration_s == pytest.approx(clean.duration_s, abs=0.1)
    assert audio.start_pts_s == pytest.approx(clean.start_pts_s or 0.0, abs=0.01)
    # One damaged span, where the damage is (the bytes' third is roughly the time's third).
    (span,) = audio.damaged_spans
    assert span[0] == pytest.approx(LENGTH_S / 3, abs=1.5)
    assert span[1] == pytest.approx(2 * LENGTH_S / 3, abs=1.5)
    assert audio.damaged_s == pytest.approx(LENGTH_S / 3, abs=2.0)
    # Silence inside the span; after it, the same audio at the same time as in the clean file.
    inside = slice(int((span[0] + 0.2) * RATE), int((span[1] - 0.2) * RATE))
    assert np.abs(audio.samples[inside]).max() < 1e-6
    after = slice(int((span[1] + 1.0) * RATE), int((LENGTH_S - 1.0) * RATE))
    a, b = _envelope(audio.samples[after]), _envelope(clean.samples[after])
    assert np.corrcoef(a, b)[0, 1] > 0.95
    assert np.abs(audio.samples[after] - clean.samples[after]).max() < 0.05


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_sound_file_reports_no_damage(encoded, fmt):
    assert decode_audio(encoded[fmt], RATE).damaged_spans == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_mostly_undecodable_file_is_refused(encoded, fmt):
    assert MAX_DAMAGED_SHARE == 0.5
    with pytest.raises(UndecodableAudio, match="could not be decoded"):
        decode_audio(damage(encoded[fmt], fmt, 0.15, 0.85), RATE)

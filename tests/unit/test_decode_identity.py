"""Decoding must not change: the same file gives bit-identical samples and content digest.

The content digest identifies songs already stored (re-indexing is idempotent through it) and
the samples define every stored fingerprint, so a faster decoder is only acceptable if both
are exactly what the reference decoder produces. Two proofs: golden values of files in the
repository (computed with the reference per-frame decoder), and a side-by-side comparison with
that decoder, kept verbatim in benchmarks/reference_decode.py, on freshly encoded files in the
formats and layouts each path of the service's decoder handles (numpy downmix and
swresample).
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from benchmarks.reference_decode import decode_audio_per_frame
from service.audio.decode import decode_audio
from service.audio.params import DEFAULT_PARAMS
from tests.audio_fixtures import encode, synth_song

RATE = DEFAULT_PARAMS.sample_rate_hz
DATA = Path(__file__).resolve().parents[1] / "data"

#: file, samples, sha256 of the float32 samples, content_sha256, start_pts_s
GOLDEN = [
    (
        "decode/aac_m4a_48k_mono.m4a",
        32085,
        "d3b193f3510438c97daffda5e42d2e37d57f8e8861bc6b3eeac9a261dcaede1e",
        "465405c28233502e0474446c71e0b0d82169ee2c6c23b3c644ed4dda2a337a05",
        0.0,
    ),
    (
        "decode/flac_44k_stereo.flac",
        12000,
        "35acac74bc8ef883a62ffefed5d7ce4b9f6fa71faa5d384b3478b674026657d3",
        "ce2e27ad513e2c8d1cec39d94a7ebc4e7b4fc2d97952e7771df0960c892b2c2a",
        0.0,
    ),
    (
        "decode/mp3_22k_mono.mp3",
        40000,
        "d009aea76f1891a7e3c6932d25d5bac6c71c594c344662352ce49d3b98c8d25e",
        "279ece903b38999b19c6ec413bb4903d66a2f1ac7461b266d32ad6f6effc9ca3",
        0.05011337868480726,
    ),
    (
        "decode/mp3_44k_stereo.mp3",
        40000,
        "2940854cefeebfa0d7e532235f872c26928f7d9c1df7b1c9c7869305c7ff9bc5",
        "296240811b55fb12072d9fa6c347651dda04d67fdf9759fc3c95f8bc95ac9adf",
        0.02505668934240363,
    ),
    (
        "decode/opus_48k_stereo.opus",
        40000,
        "00963eed2b7949f1dc3fe1cc50228bc4010da6f94e7494b6a9244c9aad88c1f3",
        "b3cb51908aec607d3a76c04b027cdc18f0e5d883ace8d62c292ca131a995774e",
        0.0,
    ),
    (
        "decode/ts_video_48k_stereo.ts",
        24235,
        "0b3241035b6d231bc9c6f5507163ca9359ed5a6ad04ef1865f7cd85ed3af86e4",
        "30be55b66fca8175faa16a108b7af6ee284be9f46597c9b4967ce5ca328aa6ab",
        1.4,
    ),
    (
        "decode/wav_22k_mono.wav",
        20000,
        "7cbb20fa43b1c28e5bef376263b20a7c383350571b66a3d2ea1142a721548c0a",
        "b2f6fabd1aef1b09e5a9d1bbfe8c3599d95e2c3795e57b426958ce8c6b4ecf18",
        0.0,
    ),
    (
        "music/nebula.ogg",
        240000,
        "df8636ad9d7dfcee5a073275aa48fbfbf84f3c901fae0c429c14df001a29a4f4",
        "ec7f9c1b07f26d21b2ba0c00ca493d2e67ba5d29396071b40745765e30e3d915",
        0.0,
    ),
    (
        "music/chaos_god.ogg",
        240000,
        "445dcfe72b05d465ab072f77c74f4e676b75d72bc3c39ee496aa6e0ede4780ee",
        "357f2f3f1f623dcbad6cc73be299754d75bfd30e38fe85342990b7c1fd9ae5d3",
        0.0,
    ),
]


@pytest.mark.parametrize(("name", "n_samples", "samples_sha256", "content_sha256", "pts_s"), GOLDEN)
def test_committed_files_decode_to_their_golden_samples_and_digest(
    name, n_samples, samples_sha256, content_sha256, pts_s
):
    audio = decode_audio(DATA / name, RATE)
    assert len(audio.samples) == n_samples
    assert hashlib.sha256(audio.samples.tobytes()).hexdigest() == samples_sha256
    assert audio.content_sha256 == content_sha256
    assert audio.start_pts_s == pytest.approx(pts_s, abs=1e-9)


def _ffmpeg(pcm: np.ndarray, rate_hz: int, channels: int, out: Path, *args: str) -> Path:
    """Encode `channels` slightly different copies of `pcm` (so a downmix has work to do)."""
    gains = np.linspace(1.0, 0.6, channels)[None, :]
    shifted = np.stack([np.roll(pcm, 37 * c) for c in range(channels)], axis=1) * gains
    raw = (np.clip(shifted, -1, 1) * 32767).astype("<i2").tobytes()
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "s16le",
         "-ar", str(rate_hz), "-ac", str(channels), "-i", "pipe:0", *args, str(out)],
        input=raw, check=True,
    )  # fmt: skip
    return out


#: name -> (rate, channels, suffix, ffmpeg output arguments). Covers both stereo and mono in
#: the float and 16-bit formats downmixed with numpy, and formats and layouts left to
#: swresample (5.1, 24-bit, 8-bit, double).
CASES: dict[str, tuple[int, int, str, list[str]]] = {
    "mp3_44k_stereo": (44100, 2, ".mp3", ["-c:a", "libmp3lame", "-b:a", "128k"]),
    "mp3_48k_mono": (48000, 1, ".mp3", ["-c:a", "libmp3lame", "-b:a", "96k"]),
    "mp3_22k_stereo": (22050, 2, ".mp3", ["-c:a", "libmp3lame", "-b:a", "64k"]),
    "aac_ts_48k_stereo": (48000, 2, ".ts", ["-c:a", "aac", "-b:a", "128k", "-f", "mpegts"]),
    "aac_adts_44k_mono": (44100, 1, ".aac", ["-c:a", "aac", "-b:a", "96k", "-f", "adts"]),
    "vorbis_44k_stereo": (44100, 2, ".ogg", ["-c:a", "libvorbis", "-q:a", "4"]),
    "opus_48k_stereo": (48000, 2, ".opus", ["-c:a", "libopus", "-b:a", "64k"]),
    "flac_48k_stereo_s16": (48000, 2, ".flac", ["-c:a", "flac"]),
    "wav_22k_stereo_s16": (22050, 2, ".wav", ["-c:a", "pcm_s16le"]),
    "wav_8k_mono_s16": (8000, 1, ".wav", ["-c:a", "pcm_s16le"]),
    "wav_44k_stereo_f32": (44100, 2, ".wav", ["-c:a", "pcm_f32le"]),
    "wav_44k_stereo_s24": (44100, 2, ".wav", ["-c:a", "pcm_s24le"]),
    "wav_22k_mono_u8": (22050, 1, ".wav", ["-c:a", "pcm_u8"]),
    "wav_22k_stereo_f64": (22050, 2, ".wav", ["-c:a", "pcm_f64le"]),
    "flac_44k_51_s24": (44100, 6, ".flac", ["-c:a", "flac", "-sample_fmt", "s32"]),
    "aac_m4a_48k_51": (48000, 6, ".m4a", ["-c:a", "aac", "-b:a", "192k"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_decoder_equals_the_per_frame_decoder_bit_for_bit(tmp_path, case):
    rate_hz, channels, suffix, args = CASES[case]
    path = _ffmpeg(synth_song(11, 7.3, rate_hz), rate_hz, channels, tmp_path / f"a{suffix}", *args)
    new = decode_audio(path, RATE)
    old = decode_audio_per_frame(path, RATE)
    assert len(new.samples) > 7 * RATE
    assert new.samples.dtype == np.float32
    assert np.array_equal(new.samples, old.samples)
    assert new.content_sha256 == old.content_sha256
    assert new.start_pts_s == old.start_pts_s
    # Bytes in memory go through the same path as files on disk.
    assert decode_audio(path.read_bytes(), RATE).content_sha256 == old.content_sha256


def test_files_ending_at_a_batch_boundary_are_identical(tmp_path):
    # Lengths around the one-second batch: a file that ends just after a batch was flushed
    # leaves soxr only its final flush.
    for seconds in (1.0, 2.0 + 1 / 44100, 2.5):
        path = encode(synth_song(12, seconds, 44100), tmp_path / "b", "wav", rate_hz=44100)
        new, old = decode_audio(path, RATE), decode_audio_per_frame(path, RATE)
        assert np.array_equal(new.samples, old.samples)
        assert new.content_sha256 == old.content_sha256


def test_a_probe_too_short_for_the_stream_falls_back_to_the_full_probe(monkeypatch):
    """The quick probe that spares WAV files a second decode must never change what a file
    decodes to: where it leaves the stream's parameters unknown (MPEG-TS needs packets to
    find them), the default probe is used."""
    import service.audio.decode as decode_module

    path = DATA / "decode" / "ts_video_48k_stereo.ts"
    expected = decode_audio(path, DEFAULT_PARAMS.sample_rate_hz)
    monkeypatch.setattr(decode_module, "_QUICK_PROBE", {"probesize": "32"})
    with av.open(str(path), options={"probesize": "32"}) as short:
        assert not decode_module._complete(short)  # the case this test is about
    for source in (path, path.read_bytes()):
        again = decode_audio(source, DEFAULT_PARAMS.sample_rate_hz)
        assert again.content_sha256 == expected.content_sha256
        assert np.array_equal(again.samples, expected.samples)

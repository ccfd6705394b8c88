"""Invariants of the signal pipeline: decoding, peaks, hashes."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from service.audio import peaks as peaks_module
from service.audio.analysis import analyse_file
from service.audio.decode import decode_audio
from service.audio.fingerprint import fingerprint
from service.audio.hashes import pack_hashes, pair_peaks, unpack_hashes
from service.audio.params import DEFAULT_PARAMS
from service.audio.peaks import find_peaks
from service.audio.spectrogram import spectrogram_db
from service.errors import AudioTooShort, EmptyFile, NotAudio, UndecodableAudio
from tests.audio_fixtures import FORMATS, SYNTH_RATE_HZ, encode, synth_song

RATE = DEFAULT_PARAMS.sample_rate_hz


@pytest.fixture(scope="module")
def song() -> np.ndarray:
    return synth_song(7, 12.0)


@pytest.mark.parametrize("fmt", [*FORMATS, "ts_video"])
def test_decode_every_container_to_mono_at_fingerprint_rate(song, tmp_path, fmt):
    path = encode(song, tmp_path / "song", fmt, channels=2)
    audio = decode_audio(path, RATE)
    assert audio.samples.dtype == np.float32
    assert audio.samples.ndim == 1
    assert audio.sample_rate_hz == RATE
    # Codecs pad with priming samples and frame remainders; a few tens of ms at most.
    assert audio.duration_s == pytest.approx(12.0, abs=0.1)
    assert 0.2 < np.abs(audio.samples).max() <= 1.0


def test_decode_reads_tags_and_ts_presentation_time(song, tmp_path):
    mp3 = encode(song, tmp_path / "tagged", "mp3", tags={"title": "Tïtle", "artist": "Ärtist"})
    audio = decode_audio(mp3, RATE)
    assert audio.tags["title"] == "Tïtle"
    assert audio.tags["artist"] == "Ärtist"
    ts = decode_audio(encode(song, tmp_path / "seg", "ts_video"), RATE)
    assert ts.start_pts_s is not None and ts.start_pts_s > 0  # MPEG-TS clocks start > 0


def test_same_pcm_in_other_container_has_same_content_hash(song, tmp_path):
    wav = decode_audio(encode(song, tmp_path / "a", "wav"), RATE)
    flac = decode_audio(encode(song, tmp_path / "b", "flac"), RATE)
    mp3 = decode_audio(encode(song, tmp_path / "c", "mp3"), RATE)
    assert wav.content_sha256 == flac.content_sha256
    assert wav.content_sha256 != mp3.content_sha256


def test_decode_from_bytes_equals_decode_from_path(song, tmp_path):
    path = encode(song, tmp_path / "a", "ogg")
    assert decode_audio(path.read_bytes(), RATE).content_sha256 == (
        decode_audio(path, RATE).content_sha256
    )


def test_decode_errors(tmp_path, song):
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    with pytest.raises(EmptyFile):
        decode_audio(empty, RATE)
    text = tmp_path / "notes.mp3"
    text.write_bytes(b"this is not audio at all\n" * 200)
    with pytest.raises((NotAudio, UndecodableAudio)):
        decode_audio(text, RATE)
    video_only = tmp_path / "video.ts"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
         "color=c=black:s=64x64:r=5:d=1", "-c:v", "libx264", str(video_only)],
        check=True,
    )  # fmt: skip
    with pytest.raises(NotAudio, match="no audio stream"):
        decode_audio(video_only, RATE)
    truncated = tmp_path / "truncated.m4a"
    truncated.write_bytes(encode(song, tmp_path / "whole", "aac_m4a").read_bytes()[:300])
    with pytest.raises((NotAudio, UndecodableAudio)):
        decode_audio(truncated, RATE)


def test_too_short_audio_is_refused(tmp_path):
    short = encode(synth_song(3, 0.5), tmp_path / "short", "wav")
    with pytest.raises(AudioTooShort):
        analyse_file(short, DEFAULT_PARAMS)


def test_spectrogram_puts_a_full_scale_sine_at_0_db():
    t = np.arange(RATE * 2) / RATE
    bin_index = 128  # exactly on a bin centre
    sine = np.sin(2 * np.pi * bin_index * RATE / DEFAULT_PARAMS.n_fft * t).astype(np.float32)
    spec = spectrogram_db(sine, DEFAULT_PARAMS)
    assert spec.shape[1] == DEFAULT_PARAMS.n_fft // 2 + 1
    assert spec[:, bin_index].mean() == pytest.approx(0.0, abs=0.1)


def test_silence_yields_no_peaks_and_no_hashes():
    silence = np.zeros(RATE * 5, dtype=np.float32)
    assert len(find_peaks(silence, DEFAULT_PARAMS)) == 0
    assert len(fingerprint(silence, DEFAULT_PARAMS)) == 0


def test_peak_density_is_bounded(song):
    samples = decode_audio_samples(song)
    p = DEFAULT_PARAMS
    peaks = find_peaks(samples, p)
    assert len(peaks) / (len(samples) / RATE) > 5  # music yields plenty of landmarks
    # Peaks within density_frames of each other compete: no such span holds more than
    # density_peaks survivors.
    span_end = np.searchsorted(peaks.frames, peaks.frames + p.density_frames, side="right")
    assert (span_end - np.arange(len(peaks))).max() <= p.density_peaks
    assert np.all(np.diff(peaks.frames) >= 0)
    assert peaks.bins.min() >= p.min_bin and peaks.bins.max() <= p.max_bin


def decode_audio_samples(samples: np.ndarray) -> np.ndarray:
    import soxr

    return soxr.resample(samples, SYNTH_RATE_HZ, RATE).astype(np.float32)


def test_chunked_peak_picking_equals_whole_signal(song, monkeypatch):
    samples = decode_audio_samples(song)
    whole = find_peaks(samples, DEFAULT_PARAMS)
    monkeypatch.setattr(peaks_module, "_CHUNK_FRAMES", 50)
    chunked = find_peaks(samples, DEFAULT_PARAMS)
    np.testing.assert_array_equal(whole.frames, chunked.frames)
    np.testing.assert_array_equal(whole.bins, chunked.bins)


def test_pack_unpack_round_trip_and_time_difference_is_hashed():
    rng = np.random.default_rng(0)
    p = DEFAULT_PARAMS
    f1 = rng.integers(p.min_bin, p.max_bin + 1, 1000)
    f2 = np.clip(f1 + rng.integers(-p.max_df_bins, p.max_df_bins + 1, 1000), 0, p.max_bin)
    dt = rng.integers(p.min_dt_frames, p.max_dt_frames + 1, 1000)
    hashes = pack_hashes(f1, f2, dt, p)
    assert hashes.dtype == np.int32 and hashes.min() >= 0
    u1, u2, udt = unpack_hashes(hashes)
    np.testing.assert_array_equal(u1, f1)
    np.testing.assert_array_equal(u2, f2)
    np.testing.assert_array_equal(udt, dt)
    # The reference sample's flaw: pairs differing only in their time gap must hash apart.
    assert pack_hashes(f1[:1], f2[:1], np.array([3]), p) != pack_hashes(
        f1[:1], f2[:1], np.array([4]), p
    )


def test_pairs_respect_target_zone_and_fan_out(song):
    samples = decode_audio_samples(song)
    peaks = find_peaks(samples, DEFAULT_PARAMS)
    a, t = pair_peaks(peaks, DEFAULT_PARAMS)
    dt = peaks.frames[t] - peaks.frames[a]
    assert dt.min() >= DEFAULT_PARAMS.min_dt_frames and dt.max() <= DEFAULT_PARAMS.max_dt_frames
    assert np.abs(peaks.bins[t] - peaks.bins[a]).max() <= DEFAULT_PARAMS.max_df_bins
    assert np.bincount(a).max() <= DEFAULT_PARAMS.fan_out


def test_hashes_shift_with_the_signal(song):
    """Delaying the audio by whole frames delays every offset and keeps the hashes."""
    samples = decode_audio_samples(song)
    shift_frames = 40
    pad = np.zeros(shift_frames * DEFAULT_PARAMS.hop, dtype=np.float32)
    a = fingerprint(samples, DEFAULT_PARAMS)
    b = fingerprint(np.concatenate([pad, samples]), DEFAULT_PARAMS)
    pairs_a = set(zip(a.hashes.tolist(), (a.offsets + shift_frames).tolist(), strict=True))
    pairs_b = set(zip(b.hashes.tolist(), b.offsets.tolist(), strict=True))
    assert len(pairs_a & pairs_b) / len(pairs_a) > 0.9


def test_other_parameters_give_another_index_version():
    assert DEFAULT_PARAMS.version == replace(DEFAULT_PARAMS).version
    assert DEFAULT_PARAMS.version != replace(DEFAULT_PARAMS, fan_out=11).version


_DIGEST_SCRIPT = """
import hashlib, sys
from service.audio.analysis import analyse_file
from service.audio.params import DEFAULT_PARAMS
fp = analyse_file(sys.argv[1], DEFAULT_PARAMS).fingerprints
print(hashlib.sha256(fp.hashes.tobytes() + fp.offsets.tobytes()).hexdigest())
"""


def test_fingerprints_are_identical_across_processes(song, tmp_path):
    """No salted hash(), no run-dependent state: another interpreter gives the same bytes."""
    path = encode(song, tmp_path / "song", "mp3")
    fp = analyse_file(path, DEFAULT_PARAMS).fingerprints
    here = hashlib.sha256(fp.hashes.tobytes() + fp.offsets.tobytes()).hexdigest()
    digests = {
        subprocess.run(
            [sys.executable, "-c", _DIGEST_SCRIPT, str(path)],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parents[2],
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert digests == {here}


@pytest.mark.parametrize("bands", [1, 3])
def test_thinning_query_peaks_approximates_the_index_pick(bands: int) -> None:
    """Queries look up their index-density landmarks first (service.core.identify); those
    come from thinning the denser query peaks, which must stay close to what the index picks."""
    params = replace(DEFAULT_PARAMS, density_bands=bands)
    rng = np.random.default_rng(3)
    samples = synth_song(11, 12.0, rate_hz=RATE)
    resampled = (samples + 0.3 * samples.std() * rng.standard_normal(len(samples))).astype(
        np.float32
    )
    dense = find_peaks(resampled, params.for_queries())
    thinned = peaks_module.thin_peaks(dense, params)
    direct = find_peaks(resampled, params)
    as_set = lambda p: set(zip(p.frames.tolist(), p.bins.tolist(), strict=True))  # noqa: E731
    assert as_set(thinned) <= as_set(dense)
    assert len(thinned) < len(dense)
    overlap = len(as_set(thinned) & as_set(direct)) / len(as_set(direct))
    assert overlap >= 0.95
    # Thinning at the density a set was picked with changes nothing.
    assert as_set(peaks_module.thin_peaks(direct, params)) == as_set(direct)


def test_service_processes_keep_freed_memory_on_glibc():
    """Every request allocates and frees arrays of megabytes; on glibc the thresholds that
    keep them mapped must be accepted (elsewhere the call is a harmless no-op)."""
    import platform

    from service.memory import keep_freed_memory

    on_glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() is on_glibc


def test_an_analysis_records_the_frame_length_of_its_parameters(song, tmp_path):
    """Offsets are frames of the parameters the audio was analysed with; what turns them into
    seconds (a duplicate's overlap) reads the frame length from the analysis itself."""
    path = encode(song, tmp_path / "song", "mp3")
    usual = analyse_file(path, DEFAULT_PARAMS)
    coarse = analyse_file(path, replace(DEFAULT_PARAMS, hop=2 * DEFAULT_PARAMS.hop))
    assert usual.frame_s == DEFAULT_PARAMS.frame_s
    assert coarse.frame_s == pytest.approx(2 * usual.frame_s)
    assert usual.n_frames * usual.frame_s == pytest.approx(usual.duration_s, abs=0.1)
    assert coarse.n_frames * coarse.frame_s == pytest.approx(coarse.duration_s, abs=0.1)

"""Real encoded audio for tests: synthesized music, encoded by ffmpeg into real containers.

The "songs" are seeded random melodies over chords with a percussion track: tonal peaks,
transients and a noise floor like real music, distinct from seed to seed, and free of any
licence question. Encoding goes through the ffmpeg binary so every test file is exactly what a
user would upload.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

SYNTH_RATE_HZ = 22050

#: name -> (suffix, ffmpeg output arguments)
FORMATS: dict[str, tuple[str, list[str]]] = {
    "mp3": (".mp3", ["-c:a", "libmp3lame", "-b:a", "128k"]),
    "mp3_64k": (".mp3", ["-c:a", "libmp3lame", "-b:a", "64k"]),
    "aac_m4a": (".m4a", ["-c:a", "aac", "-b:a", "96k"]),
    "aac_adts": (".aac", ["-c:a", "aac", "-b:a", "96k", "-f", "adts"]),
    "ogg": (".ogg", ["-c:a", "libvorbis", "-q:a", "4"]),
    "opus": (".opus", ["-c:a", "libopus", "-b:a", "64k"]),
    "flac": (".flac", ["-c:a", "flac"]),
    "wav": (".wav", ["-c:a", "pcm_s16le"]),
}


def synth_song(seed: int, duration_s: float, rate_hz: int = SYNTH_RATE_HZ) -> np.ndarray:
    """A seeded, music-like mono signal in [-1, 1] (float32)."""
    rng = np.random.default_rng(seed)
    n = int(duration_s * rate_hz)
    out = np.zeros(n, dtype=np.float64)
    tempo_s = rng.uniform(0.18, 0.35)
    scale = np.array([0, 2, 3, 5, 7, 8, 10, 12, 14, 15])
    root = rng.uniform(45, 60)
    t_note = 0.0
    while t_note < duration_s:
        length = tempo_s * rng.choice([1, 1, 2, 3])
        start = int(t_note * rate_hz)
        stop = min(n, start + int(length * rate_hz))
        t = np.arange(stop - start) / rate_hz
        envelope = np.exp(-t * rng.uniform(2.0, 6.0)) * np.minimum(1.0, t * 200)
        for voice in range(rng.integers(1, 4)):
            midi = root + 12 * voice + rng.choice(scale)
            freq = 440.0 * 2 ** ((midi - 69) / 12)
            for harmonic in range(1, 5):
                if freq * harmonic < rate_hz / 2:
                    out[start:stop] += (
                        envelope * np.sin(2 * np.pi * freq * harmonic * t) / harmonic**1.3 * 0.2
                    )
        if rng.random() < 0.5:  # a drum hit: a short filtered noise burst
            burst = min(stop - start, int(0.05 * rate_hz))
            noise = rng.standard_normal(burst) * np.exp(-np.arange(burst) / (0.01 * rate_hz))
            out[start : start + burst] += 0.3 * np.convolve(noise, np.ones(4) / 4, mode="same")
        t_note += length
    out += 0.003 * rng.standard_normal(n)
    out /= max(1e-9, np.abs(out).max()) / 0.8
    return out.astype(np.float32)


def encode(
    samples: np.ndarray,
    path: Path,
    fmt: str,
    rate_hz: int = SYNTH_RATE_HZ,
    channels: int = 1,
    tags: dict[str, str] | None = None,
) -> Path:
    """Encode mono float samples with ffmpeg into `path` (suffix added) in format `fmt`.

    `fmt` is a key of FORMATS, or "ts_video": AAC audio plus an H.264 video track in MPEG-TS,
    as AWS Elemental MediaLive archives write. `channels=2` duplicates the signal into stereo.
    """
    meta = [a for k, v in (tags or {}).items() for a in ("-metadata", f"{k}={v}")]
    pcm = np.clip(samples, -1, 1)
    raw = (np.repeat(pcm[:, None], channels, axis=1) * 32767).astype("<i2").tobytes()
    audio_in = ["-f", "s16le", "-ar", str(rate_hz), "-ac", str(channels), "-i", "pipe:0"]
    if fmt == "ts_video":
        out_path = path.with_suffix(".ts")
        duration = len(samples) / rate_hz
        args = [
            *audio_in,
            "-f", "lavfi", "-i", f"color=c=black:s=160x90:r=25:d={duration:.3f}",
            "-map", "1:v", "-map", "0:a",
            "-c:v", "libx264", "-preset", "ultrafast", "-g", "25",
            "-c:a", "aac", "-b:a", "128k", "-f", "mpegts",
        ]  # fmt: skip
    else:
        suffix, codec = FORMATS[fmt]
        out_path = path.with_suffix(suffix)
        args = [*audio_in, *codec]
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args, *meta, str(out_path)]
    subprocess.run(cmd, input=raw, check=True)
    return out_path


def excerpt(samples: np.ndarray, start_s: float, length_s: float, rate_hz: int = SYNTH_RATE_HZ):
    a = int(start_s * rate_hz)
    return samples[a : a + int(length_s * rate_hz)]

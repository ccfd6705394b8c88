"""A short broadcast program cut into MediaLive-like archive segments, for stream tests.

The program joins excerpts of synthesized catalogue songs with unknown music (never indexed)
and is encoded once by ffmpeg into 12-s MPEG-TS segments with an H.264 video track and AAC
audio, cut at video keyframes, timestamps running on across segments, as MediaLive writes
them (`-f segment`, like ../shared/corpus/make_stream.py).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.audio_fixtures import SYNTH_RATE_HZ, synth_song

SEGMENT_S = 12


@dataclass(frozen=True)
class Piece:
    """`song` None is unknown music; `start_s` is where the excerpt starts in the song."""

    song: int | None
    start_s: float
    length_s: float


@dataclass(frozen=True)
class Program:
    samples: np.ndarray  # mono float32 at SYNTH_RATE_HZ
    #: (song seed or None, program start s, program end s, song start s) per piece.
    pieces: list[tuple[int | None, float, float, float]]


def build_program(pieces: list[Piece], song_length_s: float) -> Program:
    parts, truth, at = [], [], 0.0
    for i, piece in enumerate(pieces):
        source = synth_song(piece.song if piece.song is not None else 5000 + i, song_length_s)
        a = int(piece.start_s * SYNTH_RATE_HZ)
        chunk = source[a : a + int(piece.length_s * SYNTH_RATE_HZ)]
        parts.append(chunk)
        end = at + len(chunk) / SYNTH_RATE_HZ
        truth.append((piece.song, at, end, piece.start_s))
        at = end
    return Program(np.concatenate(parts).astype(np.float32), truth)


def segment_program(
    program: Program, folder: Path, name: str, rate_hz: int, first_number: int = 1
) -> list[Path]:
    """Encode to AAC (stereo, `rate_hz`) + H.264 and cut into 12-s TS files
    `<name>.<NNNNNN>.ts` numbered from `first_number`; returns them in order."""
    folder.mkdir(parents=True, exist_ok=True)
    duration = len(program.samples) / SYNTH_RATE_HZ
    pcm = (np.clip(program.samples, -1, 1) * 32767).astype("<i2").tobytes()
    cmd = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "s16le", "-ar", str(SYNTH_RATE_HZ), "-ac", "1", "-i", "pipe:0",
        "-f", "lavfi", "-i", f"color=c=black:s=160x90:r=25:d={duration:.3f}",
        "-map", "1:v", "-map", "0:a",
        "-c:v", "libx264", "-preset", "ultrafast", "-g", str(SEGMENT_S * 25),
        "-force_key_frames", f"expr:gte(t,n_forced*{SEGMENT_S})",
        "-c:a", "aac", "-b:a", "128k", "-ar", str(rate_hz), "-ac", "2",
        "-f", "segment", "-segment_time", str(SEGMENT_S), "-segment_format", "mpegts",
        "-segment_start_number", str(first_number),
        str(folder / f"{name}.%06d.ts"),
    ]  # fmt: skip
    subprocess.run(cmd, input=pcm, check=True)
    return sorted(folder.glob(f"{name}.*.ts"))

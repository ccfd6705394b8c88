"""Harder deliveries of the corpus's broadcast program, built by the stream benchmark itself.

The corpus scripts build one program and cut it once (make_stream.py); these variants are made
from that program's own files with ffmpeg and sox, their truth derived from truth.csv:

- radio edits: one indexed song (between talk gaps) played 3 % fast (`sox speed 1.03`: tempo
  and pitch together, the program after it 3 % of its length earlier), another pitch-shifted
  by a semitone (`sox pitch 100`, tempo kept); the edited program re-encoded to AAC and cut
  into 12-s MPEG-TS segments as make_stream.py cuts it;
- a segment missing inside a song, and one holding a song's start (the song then starts, as
  far as the stream can tell, where the segment after the hole does);
- a corrupted segment inside a song: the payload of a third of its TS packets overwritten.
"""

from __future__ import annotations

import csv
import itertools
import random
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

SEGMENT_S = 12.0
#: The AAC encoder's priming: program sample 0 is the first PTS plus this many samples.
AAC_PRIMING = 1024


@dataclass(frozen=True)
class Piece:
    kind: str
    track_id: str
    indexed: bool
    start_s: float
    end_s: float
    crossfade_in_s: float = 0.0
    crossfade_out_s: float = 0.0


@dataclass(frozen=True)
class Segment:
    path: Path
    #: Program time of its first audio sample.
    start_s: float
    duration_s: float


def read_truth(path: Path) -> list[Piece]:
    with path.open(newline="") as f:
        return [
            Piece(
                r["kind"],
                r["track_id"],
                r["indexed"] == "1",
                float(r["program_start_s"]),
                float(r["program_end_s"]),
                float(r["crossfade_in_s"] or 0),
                float(r["crossfade_out_s"] or 0),
            )
            for r in csv.DictReader(f)
        ]


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def between_talk(truth: list[Piece]) -> list[Piece]:
    """Indexed songs with a talk gap on either side: edits there move no crossfade."""
    return [
        p
        for i, p in enumerate(truth)
        if p.kind == "track"
        and p.indexed
        and 0 < i < len(truth) - 1
        and truth[i - 1].kind == "talk"
        and truth[i + 1].kind == "talk"
    ]


def radio_edit(
    program_m4a: Path, truth: list[Piece], work: Path
) -> tuple[list[Segment], list[Piece], str]:
    """The program with one song 3 % fast and another a semitone up, in 12-s TS segments;
    their truth; what was edited."""
    fast, shifted = between_talk(truth)[:2]
    work.mkdir(parents=True, exist_ok=True)
    wav = work / "program.wav"
    _run(["ffmpeg", "-v", "error", "-y", "-i", str(program_m4a), "-ac", "2", str(wav)])
    cuts = sorted([fast.start_s, fast.end_s, shifted.start_s, shifted.end_s])
    parts, bounds = [], [0.0, *cuts, None]
    for n, (a, b) in enumerate(itertools.pairwise(bounds)):
        part = work / f"part{n}.wav"
        trim = ["trim", f"{a:.6f}"] + ([] if b is None else [f"={b:.6f}"])
        effect: list[str] = []
        if a == fast.start_s:
            effect = ["speed", "1.03"]
        elif a == shifted.start_s:
            effect = ["pitch", "100"]
        _run(["sox", str(wav), str(part), *trim, *effect])
        parts.append(str(part))
    edited = work / "edited.wav"
    _run(["sox", *parts, str(edited)])
    shrink = (fast.end_s - fast.start_s) * (1 - 1 / 1.03)

    def moved(t: float) -> float:
        if t <= fast.start_s:
            return t
        if t >= fast.end_s:
            return t - shrink
        return fast.start_s + (t - fast.start_s) / 1.03

    new_truth = [replace(p, start_s=moved(p.start_s), end_s=moved(p.end_s)) for p in truth]
    folder = work / "segments"
    folder.mkdir(exist_ok=True)
    _run(
        [
            "ffmpeg", "-v", "error", "-y", "-i", str(edited),
            "-c:a", "aac", "-b:a", "128k", "-ar", "44100", "-ac", "2",
            "-f", "segment", "-segment_time", str(int(SEGMENT_S)), "-segment_format", "mpegts",
            "-segment_start_number", "1", str(folder / "stream1.%06d.ts"),
        ]
    )  # fmt: skip
    files = sorted(folder.glob("stream1.*.ts"))
    segments, at = [], -AAC_PRIMING / 44100
    for path in files:
        duration = _duration_s(path)
        segments.append(Segment(path, at, duration))
        at += duration
    what = (
        f"{fast.track_id} 3 % fast (sox speed 1.03), {shifted.track_id} a semitone up "
        "(sox pitch 100)"
    )
    return segments, new_truth, what


def _duration_s(path: Path) -> float:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
         "stream=duration", "-of", "csv=p=0", str(path)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return float(out.strip().splitlines()[0])


def segment_holding(segments: list[Segment], at_s: float) -> int:
    return next(i for i, s in enumerate(segments) if s.start_s <= at_s < s.start_s + s.duration_s)


def missing(segments: list[Segment], truth: list[Piece]) -> tuple[list[int], list[Piece], str]:
    """Drop the segment in the middle of the longest indexed song, and the one holding the
    start of the first indexed song after a talk gap (that is not the first); the order of
    the rest, and the truth as the stream can know it (a song starts after the hole)."""
    songs = [p for p in truth if p.kind == "track" and p.indexed]
    longest = max(songs, key=lambda p: p.end_s - p.start_s)
    inside = segment_holding(segments, (longest.start_s + longest.end_s) / 2)
    opening = next(p for p in between_talk(truth) if p is not longest)
    at_start = segment_holding(segments, opening.start_s + 0.5)
    dropped = sorted({inside, at_start})
    holes = [(segments[i].start_s, segments[i].start_s + segments[i].duration_s) for i in dropped]
    seen = []
    for piece in truth:
        start, end = piece.start_s, piece.end_s
        for a, b in holes:
            if a <= start < b:
                start = b
            if a < end <= b:
                end = a
        seen.append(replace(piece, start_s=start, end_s=end))
    what = (
        f"segment {inside + 1} (inside {longest.track_id}) and "
        f"{at_start + 1} (holding the start of {opening.track_id})"
    )
    return [i for i in range(len(segments)) if i not in dropped], seen, what


def corrupt(segments: list[Segment], truth: list[Piece], work: Path) -> tuple[list[Segment], str]:
    """The segments with the one in the middle of the second-longest indexed song damaged:
    the payload of every TS packet in its middle third overwritten with random bytes."""
    songs = sorted(
        (p for p in truth if p.kind == "track" and p.indexed), key=lambda p: p.start_s - p.end_s
    )
    target = songs[1]
    index = segment_holding(segments, (target.start_s + target.end_s) / 2)
    data = bytearray(segments[index].path.read_bytes())
    rng = random.Random(11)
    packets = len(data) // 188
    for k in range(packets // 3, 2 * packets // 3):
        data[k * 188 + 4 : (k + 1) * 188] = rng.randbytes(184)
    work.mkdir(parents=True, exist_ok=True)
    damaged = work / segments[index].path.name
    damaged.write_bytes(bytes(data))
    out = list(segments)
    out[index] = replace(segments[index], path=damaged)
    return (
        out,
        f"segment {index + 1} (inside {target.track_id}): the middle third of its TS packets",
    )

"""Live-stream benchmark: the airplay log, and the events a subscriber sees, of a MediaLive-like
program of real music, delivered the ways AWS delivers it.

Uses the broadcast program of the development corpus (../shared/corpus/make_stream.py:
20 real tracks, 40-120 s portions joined by crossfades and talk gaps, AAC in 12-s MPEG-TS
segments with an H.264 track, `$CORPUS_DIR/streams/<set>/`). Indexes the program's indexed
tracks through the service's own code path into a fresh catalogue, then feeds segments
through `process_stream_segment` (what the worker calls), one stream per delivery:

- in order, one worker;
- shuffled with 10 % of the segments delivered twice, four workers at once (a backlog
  drained by a fleet: S3 notifications are not ordered);
- radio edits, in order: one song 3 % fast, one a semitone up (benchmarks/stream_variants.py
  builds the program with sox and cuts it with ffmpeg);
- in order with a segment missing inside a song and one holding a song's start;
- in order with a corrupted segment inside a song.

Each delivery runs on a simulated wall clock (one segment every 12 s in order; a shuffled
backlog drained at 4 segments a second), which is what settles plays whose segments are
missing (STREAM_ANNOUNCE_SETTLE_S). The final log is compared with the truth: plays found
(indexed tracks aired >= 15 s), false plays (a song where it did not air), start and end
errors (target: within 1 s; a crossfaded song's truth spans its whole fade, where it is
audible). The events the outbox held after each segment are read as a subscriber reads
them: plays announced (`play.started`), announced plays later retracted, corrections
(other `play.updated`), and in order how far the stream had got past the song's start when
`play.started` went out.

    CORPUS_DIR=/path/to/corpus python -m benchmarks.streams \
        [--store postgresql://postgres@127.0.0.1:5432/sd_bench_streams] [--write]

`--store` names a PostgreSQL database that is dropped and created afresh (or a SQLite URL
whose file is replaced). `--write` updates the live-streams section of BENCHMARKS.md.

`--catalogue` keeps the PostgreSQL database `--store` names as it is instead: a large
catalogue built by latency.py (which holds the program's tracks among the corpus's), so that
the stream is matched at catalogue scale. The streams get fresh names and are deleted
afterwards; `--in-order-only` runs the in-order delivery alone, and `--segments N` feeds the
program's first N segments only (truth cut where they end). `--no-speed-search` runs as the
worker does with STREAM_SPEED_SEARCH=false.

`--answers FILE` writes each delivery's final airplay log as sorted JSON lines
(benchmarks/answers.py), one row per play: its song's corpus track id, start and end on the
stream clock and in the song, status, confidence, score, speed and windows, for
`benchmarks/compare_answers.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from benchmarks.answers import commit, write_answers
from benchmarks.benchmarks_md import this_command, write_section
from benchmarks.stream_variants import (
    AAC_PRIMING,
    Piece,
    Segment,
    corrupt,
    missing,
    radio_edit,
    read_truth,
)
from service.audio.decode import decode_audio
from service.audio.params import DEFAULT_PARAMS
from service.core.index import IndexOptions, index_path
from service.core.streams.segment import StreamParams, end_idle_plays, process_stream_segment
from service.executor import CpuPool
from service.resources import match_params_of
from service.settings import Settings
from service.store import Play, SongMeta, Store, create_store

MIN_PLAY_S = 15.0
SEGMENT_S = 12.0
STREAMS_HEADING = "## Live streams (`benchmarks/streams.py`)"
TARGET_ERROR_S = 1.0
DEFAULT_STORE = "postgresql://postgres@127.0.0.1:5432/sd_bench_streams"
#: Share of the segments a shuffled delivery sends twice, and its workers.
DUPLICATED = 0.10
SHUFFLED_WORKERS = 4
#: Simulated processing pace of a shuffled backlog (s of wall clock per segment).
BACKLOG_PACE_S = 0.25
#: When the program is over, the sweep ends its last play this long after the last segment
#: (STREAM_PLAY_END_TIMEOUT_S's default).
IDLE_TIMEOUT_S = 60.0


def corpus_dir() -> Path:
    return Path(os.environ.get("CORPUS_DIR", Path.cwd() / "corpus"))


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


async def fresh_store(url: str) -> Store:
    if url.startswith("postgres"):
        parts = urlsplit(url)
        name = parts.path.lstrip("/")
        admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
    else:
        Path(url.removeprefix("sqlite:///")).unlink(missing_ok=True)
    store = create_store(Settings(database_url=url), DEFAULT_PARAMS.version)
    await store.open()
    return store


@dataclass
class Delivery:
    label: str
    name: str
    segments: list[Segment]
    #: Indices into `segments`, in delivery order (repeats: duplicates).
    order: list[int]
    workers: int
    truth: list[Piece]
    #: Program time 0 on the stream clock.
    t0: float
    in_order: bool = True
    #: Simulated wall clock (s after the program's start) at which each delivery of `order`
    #: is processed; None: in order, each segment 2 s after it ended, or for a shuffled
    #: delivery a backlog drained at BACKLOG_PACE_S a segment.
    arrivals: list[float] | None = None
    note: str = ""


@dataclass
class Heard:
    """The events a subscriber received, each with the stream end (program clock) and the
    simulated wall clock (s after the program's start) when it was written."""

    events: list[tuple[dict, float, float]] = field(default_factory=list)


async def deliver(
    store: Store, pool: CpuPool, delivery: Delivery, stream: str, params: StreamParams
) -> tuple[float, Heard]:
    """Feed `delivery` as stream `stream`; ms per segment, and the events it made."""
    match_params = match_params_of(Settings())
    base = datetime(2025, 1, 1, tzinfo=UTC)
    queue: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
    for n, i in enumerate(delivery.order):
        queue.put_nowait((n, i))
    heard, lock = Heard(), asyncio.Lock()
    started = time.perf_counter()
    n_segments = len(delivery.segments)

    latest = [0.0]  # the simulated clock's latest reading
    done = [asyncio.Event() for _ in delivery.order]

    async def in_time(n: int) -> None:
        """On a simulated clock, processing takes less than a segment's length: a delivery
        waits for those that arrived a segment earlier, or the simulated clock would run
        ahead of one that is slow in real time (a talk segment going through every tier)."""
        if delivery.arrivals is None:
            return
        for m in range(n):
            if delivery.arrivals[m] <= delivery.arrivals[n] - SEGMENT_S:
                await done[m].wait()

    async def collect(now_s: float) -> None:
        async with lock:
            state = await store.get_stream(stream)
            if state is None:
                return
            for event in await store.pending_stream_events(state.id):
                await store.mark_stream_event_published(event.id)
                heard.events.append(
                    (json.loads(event.payload_json), state.max_end_s - delivery.t0, now_s)
                )

    async def worker() -> None:
        while not queue.empty():
            n, i = queue.get_nowait()
            await in_time(n)
            segment = delivery.segments[i]
            if delivery.arrivals is not None:
                now = base + timedelta(seconds=delivery.arrivals[n])
            elif delivery.in_order:
                now = base + timedelta(seconds=SEGMENT_S * (i + 1) + 2.0)
            else:  # a backlog: everything is already uploaded, drained at a steady pace
                now = base + timedelta(seconds=SEGMENT_S * n_segments + BACKLOG_PACE_S * n)
            await process_stream_segment(
                store,
                pool,
                "bench",
                f"songs_to_check/streams/{stream}/{segment.path.name}",
                segment.path,
                match_params,
                # Uploaded as each segment ends, as MediaLive does.
                uploaded_at=base + timedelta(seconds=SEGMENT_S * (i + 1)),
                params=params,
                fp_params=DEFAULT_PARAMS,
                now=now,
            )
            latest[0] = max(latest[0], (now - base).total_seconds())
            await collect((now - base).total_seconds())
            done[n].set()

    await asyncio.gather(*(worker() for _ in range(delivery.workers)))
    ms = (time.perf_counter() - started) * 1000.0 / len(delivery.order)
    # The program is over: as the worker's sweep does after STREAM_PLAY_END_TIMEOUT_S.
    await end_idle_plays(store, 0.0)
    await collect(latest[0] + IDLE_TIMEOUT_S)
    return ms, heard


@dataclass
class Score:
    eligible: int = 0
    found: int = 0
    split: int = 0
    start_errors: list[float] = field(default_factory=list)
    end_errors: list[float] = field(default_factory=list)
    invented: int = 0
    #: Splits, plays off by more than the target, invented plays.
    details: list[str] = field(default_factory=list)


def eligible(truth: list[Piece]) -> list[Piece]:
    return [
        p for p in truth if p.kind == "track" and p.indexed and p.end_s - p.start_s >= MIN_PLAY_S
    ]


def truth_start(piece: Piece) -> float:
    """Where the log should start `piece`: a crossfade is handed over at its middle."""
    return piece.start_s + piece.crossfade_in_s / 2


def truth_end(piece: Piece) -> float:
    return piece.end_s - piece.crossfade_out_s / 2


def score_log(
    plays: list[Play], truth: list[Piece], song_track: dict[int, str], t0: float
) -> Score:
    """Compare a log (stream clock) with the program's truth (program clock = stream - t0);
    a crossfaded boundary is due at the crossfade's middle (docs/streams.md)."""
    score = Score()
    spans = [(song_track.get(p.song_id, "?"), p.start_s - t0, p.end_s - t0) for p in plays]
    for piece in eligible(truth):
        score.eligible += 1
        mine = [
            s
            for s in spans
            if s[0] == piece.track_id and s[2] > piece.start_s and s[1] < piece.end_s
        ]
        if not mine:
            score.details.append(
                f"{piece.track_id} aired {piece.start_s:.1f}-{piece.end_s:.1f} s: missed"
            )
            continue
        score.found += 1
        score.split += len(mine) > 1
        start_error = min(s[1] for s in mine) - truth_start(piece)
        end_error = max(s[2] for s in mine) - truth_end(piece)
        score.start_errors.append(start_error)
        score.end_errors.append(end_error)
        if len(mine) > 1 or max(abs(start_error), abs(end_error)) > TARGET_ERROR_S:
            fades = f" (crossfades {piece.crossfade_in_s:.1f}/{piece.crossfade_out_s:.1f} s)"
            score.details.append(
                f"{piece.track_id} aired {piece.start_s:.1f}-{piece.end_s:.1f} s"
                + (fades if piece.crossfade_in_s or piece.crossfade_out_s else "")
                + ": "
                + ", ".join(f"{a:.1f}-{b:.1f}" for _, a, b in mine)
            )
    for track, a, b in spans:
        aired = [p for p in truth if p.track_id == track and p.end_s > a and p.start_s < b]
        if not aired:
            where = [f"{p.kind}:{p.track_id}" for p in truth if p.end_s > a and p.start_s < b]
            score.invented += 1
            score.details.append(f"false {track} at {a:.1f}-{b:.1f} s over {', '.join(where)}")
    return score


def fmt_errors(errors: list[float]) -> str:
    if not errors:
        return "-"
    within = sum(abs(e) <= TARGET_ERROR_S for e in errors)
    med = statistics.median(abs(e) for e in errors)
    worst = max(errors, key=abs)
    return f"{within}/{len(errors)}, median {med:.2f} s, worst {worst:+.2f} s"


@dataclass
class Announced:
    started: int = 0
    retracted: int = 0
    corrected: int = 0
    #: Stream seconds past the song's start when its play.started was written (in order).
    latency_s: list[float] = field(default_factory=list)
    #: The same on the (simulated) wall clock: when subscribers heard of it.
    wall_latency_s: list[float] = field(default_factory=list)


def announcements(
    heard: Heard, truth: list[Piece], song_track: dict[int, str], t0: float
) -> Announced:
    out = Announced()
    for payload, stream_end, now_s in heard.events:
        kind, play = payload["event_type"], payload["play"]
        if kind == "play.started":
            out.started += 1
            track = song_track.get(play["song"]["id"], "?")
            a, b = play["stream_start_s"] - t0, play["stream_end_s"] - t0
            aired = [p for p in truth if p.track_id == track and p.end_s > a and p.start_s < b]
            if aired:
                out.latency_s.append(stream_end - min(p.start_s for p in aired))
                out.wall_latency_s.append(now_s - min(p.start_s for p in aired))
        elif kind == "play.updated":
            if play["status"] == "retracted":
                out.retracted += 1
            else:
                out.corrected += 1
    return out


def log_key(plays: list[Play]) -> list[tuple[int, float, float, str]]:
    return [(p.song_id, round(p.start_s, 2), round(p.end_s, 2), p.status) for p in plays]


def play_rows(delivery: str, plays: list[Play], song_track: dict[int, str]) -> list[dict]:
    """A delivery's final log for --answers, one row per play in stream-clock order."""
    ordered = sorted(plays, key=lambda p: (p.start_s, p.end_s, p.song_id))
    return [
        {
            "key": [delivery, n],
            "delivery": delivery,
            "song": song_track.get(p.song_id, f"song {p.song_id}"),
            "status": p.status,
            "start_s": p.start_s,
            "end_s": p.end_s,
            "song_start_s": p.song_start_s,
            "song_end_s": p.song_end_s,
            "confidence": p.confidence,
            "score": p.score,
            "speed": p.speed,
            "windows": p.windows,
        }
        for n, p in enumerate(ordered)
    ]


def deliveries(
    args: argparse.Namespace, folder: Path, truth: list[Piece], work: Path
) -> list[Delivery]:
    """The deliveries this run makes (see the module docstring); the programs it builds go
    under `work`."""
    rows = read_csv(folder / f"segments_{args.layout}.csv")
    if args.segments:
        # The program's first N segments; truth ends where they do.
        rows = rows[: args.segments]
        cut = float(rows[-1]["program_start_s"]) + float(rows[-1]["audio_duration_s"])
        truth = [replace(p, end_s=min(p.end_s, cut)) for p in truth if p.start_s < cut]
    segments = [
        Segment(
            folder / args.layout / r["file"],
            float(r["program_start_s"]),
            float(r["audio_duration_s"]),
        )
        for r in rows
    ]
    # Program time 0 on the TS clock (make_stream.py: first PTS plus the AAC priming).
    t0 = float(rows[0]["audio_pts_start_s"]) - float(rows[0]["program_start_s"])
    n = len(segments)
    out = [Delivery("in order", "inorder", segments, list(range(n)), 1, truth, t0)]
    if args.in_order_only:
        return out
    rng = random.Random(args.seed)
    doubled = list(range(n)) + rng.sample(range(n), round(n * DUPLICATED))
    rng.shuffle(doubled)
    out.append(
        Delivery(
            f"shuffled + {DUPLICATED:.0%} duplicated, {SHUFFLED_WORKERS} workers",
            "shuffled",
            segments,
            doubled,
            SHUFFLED_WORKERS,
            truth,
            t0,
            in_order=False,
        )
    )
    # Live, late: each segment arrives 1-37 s after it ended (up to three segments late), and
    # four workers take them as they come.
    arrival = {i: SEGMENT_S * (i + 1) + rng.uniform(1.0, 1.0 + 3 * SEGMENT_S) for i in range(n)}
    late = sorted(range(n), key=lambda i: arrival[i])
    out.append(
        Delivery(
            f"live, each segment 1-37 s late, {SHUFFLED_WORKERS} workers",
            "late",
            segments,
            late,
            SHUFFLED_WORKERS,
            truth,
            t0,
            in_order=False,
            arrivals=[arrival[i] for i in late],
        )
    )
    if args.settle_only is not None:
        return out
    edited, edited_truth, what = radio_edit(folder / "program.m4a", truth, work / "edit")
    first_pts = decode_audio(edited[0].path, 8000).start_pts_s or 0.0
    out.append(
        Delivery(
            "radio edits, in order",
            "edits",
            edited,
            list(range(len(edited))),
            1,
            edited_truth,
            first_pts + AAC_PRIMING / 44100,
            note=what,
        )
    )
    order, seen_truth, what = missing(segments, truth)
    out.append(
        Delivery(
            "2 segments missing, in order", "missing", segments, order, 1, seen_truth, t0, note=what
        )
    )
    damaged, what = corrupt(segments, truth, work / "corrupt")
    out.append(
        Delivery(
            "a corrupted segment, in order",
            "corrupt",
            damaged,
            list(range(n)),
            1,
            truth,
            t0,
            note=what,
        )
    )
    return out


async def run(args: argparse.Namespace, answers: list[dict] | None = None) -> list[str]:
    """The report's lines; each delivery's plays appended to `answers` when given."""
    root = corpus_dir()
    folder = root / "streams" / args.set
    truth = read_truth(folder / "truth.csv")
    manifest = {r["track_id"]: r for r in read_csv(root / "manifest.csv")}
    work = Path(tempfile.mkdtemp(prefix="bench-streams-"))
    planned = deliveries(args, folder, truth, work)
    truth = planned[0].truth
    store = await (existing_store(args.store) if args.catalogue else fresh_store(args.store))
    songs_before = (await store.stats()).songs
    suffix = f"-{os.getpid()}" if args.catalogue else ""
    pool = CpuPool(args.workers)
    params = StreamParams(speed_search=not args.no_speed_search)
    if args.settle_only is not None:
        # No look at which segments have arrived: a play is announced once it has been in the
        # log this long (a coverage window no stream can meet), the alternative rule.
        params = replace(params, log=replace(params.log, confirm_s=1e12, settle_s=args.settle_only))
    lines: list[str] = []
    try:
        tracks = sorted({p.track_id for p in truth if p.kind == "track" and p.indexed})
        started = time.perf_counter()
        song_track: dict[int, str] = {}
        for track in tracks:
            indexed = await index_path(
                store,
                pool,
                root / manifest[track]["path"],
                IndexOptions(SongMeta(track, external_id=track)),
                params=DEFAULT_PARAMS,
            )
            song_track[indexed.song.id] = track
        await store.optimize()
        print(
            f"indexed {len(tracks)} tracks in {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
        )
        if args.catalogue and (await store.stats()).songs != songs_before:
            print("warning: the catalogue lacked some of the program's tracks", file=sys.stderr)
        logs = {}
        lines += [
            "| delivery | found (>= 15 s) | false | starts within 1 s | ends within 1 s "
            "| announced | retracted | corrections | play.started latency | ms / segment |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        details: list[str] = []
        for delivery in planned:
            stream = f"bench-{delivery.name}{suffix}"
            ms, heard = await deliver(store, pool, delivery, stream, params)
            state = await store.get_stream(stream)
            assert state is not None
            page = await store.list_plays(state.id, from_s=None, to_s=None, limit=10000, offset=0)
            logs[delivery.label] = page.items
            if answers is not None:
                answers += play_rows(delivery.name, page.items, song_track)
            s = score_log(page.items, delivery.truth, song_track, delivery.t0)
            a = announcements(heard, delivery.truth, song_track, delivery.t0)
            waits = a.latency_s if delivery.in_order else a.wall_latency_s
            latency = (
                f"median {statistics.median(waits):.1f} s, worst {max(waits):.1f} s"
                + ("" if delivery.in_order else " (wall)")
                if waits and (delivery.in_order or delivery.arrivals is not None)
                else "-"
            )
            lines.append(
                f"| {delivery.label} | {s.found}/{s.eligible} | {s.invented} "
                f"| {fmt_errors(s.start_errors)} | {fmt_errors(s.end_errors)} | {a.started} "
                f"| {a.retracted} | {a.corrected} | {latency} | {ms:.0f} |"
            )
            if delivery.note:
                details.append(f"- {delivery.label}: {delivery.note}.")
            details += [f"- {delivery.label}: {d}" for d in s.details]
            print(lines[-1], file=sys.stderr)
        same = (
            log_key(logs[planned[0].label]) == log_key(logs[planned[1].label])
            if len(planned) > 1
            else None
        )
        program_min = (truth[-1].end_s - truth[0].start_s) / 60
        lines = [
            f"Program `{args.set}` ({'its first ' if args.segments else ''}"
            f"{program_min:.1f} min, {len(planned[0].segments)} segments of 12 s, "
            f"`{args.layout}` layout; {len(tracks)} indexed tracks in a catalogue of "
            f"{songs_before if args.catalogue else len(tracks):,} songs, "
            f"{len(eligible(truth))} aired >= 15 s; {sum(p.kind == 'talk' for p in truth)} "
            f"talk gaps, {sum(p.kind == 'track' and not p.indexed for p in truth)} unindexed "
            "tracks). Times on the stream clock, compared with truth.csv."
            + (" Speed search off (`STREAM_SPEED_SEARCH=false`)." if args.no_speed_search else "")
            + (
                f" Plays announced {args.settle_only:g} s (wall clock) after they appear, "
                "whatever has arrived, instead of the service's rule."
                if args.settle_only is not None
                else ""
            ),
            "",
            *lines,
            "",
            *(
                []
                if same is None
                else [
                    f"Final logs of the in-order and shuffled deliveries identical: "
                    f"**{'yes' if same else 'NO'}** (song, start, end and status of every play).",
                ]
            ),
            *(["", *details] if details else []),
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)
        pool.close()
        await store.close()
        if args.catalogue:
            await drop_streams(args.store, [f"bench-{d.name}{suffix}" for d in planned])
    return lines


async def existing_store(url: str) -> Store:
    if not url.startswith("postgres"):
        raise SystemExit("--catalogue needs a PostgreSQL --store")
    store = create_store(Settings(database_url=url), DEFAULT_PARAMS.version)
    await store.open()
    return store


async def drop_streams(url: str, names: list[str]) -> None:
    """Delete the benchmark's streams from a kept catalogue (their segments, windows and plays
    go with them)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DELETE FROM streams WHERE name = ANY($1::text[])", names)
    finally:
        await conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--set", default="dev")
    parser.add_argument("--layout", choices=["av", "audio"], default="av")
    parser.add_argument("--store", default=DEFAULT_STORE)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--catalogue", action="store_true", help="keep --store's songs")
    parser.add_argument("--in-order-only", action="store_true")
    parser.add_argument("--segments", type=int, default=0, help="the program's first N only")
    parser.add_argument("--no-speed-search", action="store_true", help="STREAM_SPEED_SEARCH=false")
    parser.add_argument(
        "--settle-only",
        type=float,
        metavar="S",
        help="announce plays S s after they appear, whatever has arrived (in order and "
        "shuffled deliveries only): the rule the service does not use, for comparison",
    )
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    parser.add_argument("--answers", help="write each delivery's plays to this JSON-lines file")
    args = parser.parse_args()
    at_commit = commit()
    answers: list[dict] = []
    lines = asyncio.run(run(args, answers))
    print("\n".join(lines))
    if args.answers:
        write_answers(args.answers, "streams", answers, at_commit)
    if args.write:
        block = "streams-scale" if args.catalogue else "streams"
        block += "-no-speed-search" if args.no_speed_search else ""
        block += f"-settle-{args.settle_only:g}" if args.settle_only is not None else ""
        write_section(block, STREAMS_HEADING, this_command("benchmarks.streams"), lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

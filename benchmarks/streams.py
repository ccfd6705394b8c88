"""Live-stream benchmark: the airplay log of a MediaLive-like program from real music.

Uses the broadcast program of the development corpus (../shared/corpus/make_stream.py:
20 real tracks, 40-120 s portions joined by crossfades and talk gaps, AAC in 12-s MPEG-TS
segments with an H.264 track, `$CORPUS_DIR/streams/<set>/`). Indexes the program's indexed
tracks through the service's own code path into a fresh catalogue, feeds every segment
through `process_stream_segment` (what the worker calls) three times, as three streams:

- in order;
- shuffled, two segments at a time (two workers);
- shuffled with a third of the segments delivered twice, two at a time;

and compares each log with truth.csv: per-play recall (indexed tracks aired >= 15 s found),
start and end errors (target: within 2 s), plays invented where no such song aired (talk
gaps, unindexed tracks), and whether the three logs are identical.

    CORPUS_DIR=/path/to/corpus python -m benchmarks.streams \
        [--store postgresql://postgres@127.0.0.1:5432/sd_bench_streams] [--write]

`--store` names a PostgreSQL database that is dropped and created afresh (or a SQLite URL
whose file is replaced). `--write` updates the live-streams section of BENCHMARKS.md.

`--catalogue` keeps the PostgreSQL database `--store` names as it is instead: a large
catalogue built by latency.py (which holds the program's tracks among the corpus's), so that
the stream is matched at catalogue scale. The streams get fresh names and are deleted
afterwards; `--in-order-only` skips the two shuffled deliveries, which at that scale cost
many minutes each and measure nothing the first does not, and `--segments N` feeds the
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
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from benchmarks.answers import commit, write_answers
from benchmarks.benchmarks_md import this_command, write_section
from service.audio.params import DEFAULT_PARAMS
from service.core.index import index_file
from service.core.streams.segment import StreamParams, end_idle_plays, process_stream_segment
from service.executor import CpuPool
from service.resources import match_params_of
from service.settings import Settings
from service.store import Play, SongMeta, Store, create_store

MIN_PLAY_S = 15.0
SEGMENT_S = 12.0
#: The three deliveries' stream names (after "bench-").
STREAM_NAMES = ("inorder", "shuffled", "duplicated")
STREAMS_HEADING = "## Live streams (`benchmarks/streams.py`)"
TARGET_ERROR_S = 2.0
DEFAULT_STORE = "postgresql://postgres@127.0.0.1:5432/sd_bench_streams"


@dataclass(frozen=True)
class Piece:
    kind: str
    track_id: str
    indexed: bool
    start_s: float
    end_s: float


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


async def deliver(
    store: Store,
    pool: CpuPool,
    stream: str,
    files: list[Path],
    order: list[int],
    workers: int,
    start: datetime,
    params: StreamParams,
) -> float:
    """Feed the segments `order` (indices into files) as stream `stream`; ms per segment."""
    match_params = match_params_of(Settings())
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in order:
        queue.put_nowait(i)
    started = time.perf_counter()

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            await process_stream_segment(
                store,
                pool,
                "bench",
                f"songs_to_check/streams/{stream}/{files[i].name}",
                files[i],
                match_params,
                # Uploaded as each segment ends, as MediaLive does.
                uploaded_at=start + timedelta(seconds=SEGMENT_S * (i + 1)),
                params=params,
            )

    await asyncio.gather(*(worker() for _ in range(workers)))
    return (time.perf_counter() - started) * 1000.0 / len(order)


@dataclass
class Score:
    eligible: int = 0
    found: int = 0
    split: int = 0
    start_errors: list[float] | None = None
    end_errors: list[float] | None = None
    invented: int = 0
    #: Splits, plays off by more than the target, invented plays.
    invented_detail: list[str] | None = None


def score_log(
    plays: list[Play], truth: list[Piece], song_track: dict[int, str], t0: float
) -> Score:
    """Compare a log (stream clock) with the program's truth (program clock = stream - t0)."""
    score = Score(start_errors=[], end_errors=[], invented_detail=[])
    spans = [(song_track.get(p.song_id, "?"), p.start_s - t0, p.end_s - t0) for p in plays]
    for piece in truth:
        if piece.kind != "track" or not piece.indexed or piece.end_s - piece.start_s < MIN_PLAY_S:
            continue
        score.eligible += 1
        mine = [
            s
            for s in spans
            if s[0] == piece.track_id and s[2] > piece.start_s and s[1] < piece.end_s
        ]
        if not mine:
            continue
        score.found += 1
        score.split += len(mine) > 1
        start_error = min(s[1] for s in mine) - piece.start_s
        end_error = max(s[2] for s in mine) - piece.end_s
        score.start_errors.append(start_error)
        score.end_errors.append(end_error)
        if len(mine) > 1 or max(abs(start_error), abs(end_error)) > TARGET_ERROR_S:
            score.invented_detail.append(
                f"{piece.track_id} aired {piece.start_s:.1f}-{piece.end_s:.1f} s: "
                + ", ".join(f"{a:.1f}-{b:.1f}" for _, a, b in mine)
            )
    for track, a, b in spans:
        aired = [p for p in truth if p.track_id == track and p.end_s > a and p.start_s < b]
        if not aired:
            where = [f"{p.kind}:{p.track_id}" for p in truth if p.end_s > a and p.start_s < b]
            score.invented += 1
            score.invented_detail.append(
                f"invented {track} at {a:.1f}-{b:.1f} s over {', '.join(where)}"
            )
    return score


def fmt_errors(errors: list[float]) -> str:
    if not errors:
        return "-"
    within = sum(abs(e) <= TARGET_ERROR_S for e in errors)
    med = statistics.median(abs(e) for e in errors)
    worst = max(errors, key=abs)
    return f"{within}/{len(errors)} within 2 s, median {med:.2f} s, worst {worst:+.2f} s"


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


async def run(args: argparse.Namespace, answers: list[dict] | None = None) -> list[str]:
    """The report's lines; each delivery's plays appended to `answers` when given."""
    root = corpus_dir()
    folder = root / "streams" / args.set
    truth = [
        Piece(
            r["kind"],
            r["track_id"],
            r["indexed"] == "1",
            float(r["program_start_s"]),
            float(r["program_end_s"]),
        )
        for r in read_csv(folder / "truth.csv")
    ]
    manifest = {r["track_id"]: r for r in read_csv(root / "manifest.csv")}
    segments = read_csv(folder / f"segments_{args.layout}.csv")
    if args.segments:
        # The program's first N segments; truth ends where they do.
        segments = segments[: args.segments]
        cut = float(segments[-1]["program_start_s"]) + float(segments[-1]["audio_duration_s"])
        truth = [replace(p, end_s=min(p.end_s, cut)) for p in truth if p.start_s < cut]
    files = [folder / args.layout / r["file"] for r in segments]
    # Program time 0 on the TS clock (make_stream.py: first PTS plus the AAC priming).
    t0 = float(segments[0]["audio_pts_start_s"]) - float(segments[0]["program_start_s"])
    store = await (existing_store(args.store) if args.catalogue else fresh_store(args.store))
    songs_before = (await store.stats()).songs
    suffix = f"-{os.getpid()}" if args.catalogue else ""
    pool = CpuPool(args.workers)
    params = StreamParams(speed_search=not args.no_speed_search)
    lines: list[str] = []
    try:
        tracks = sorted({p.track_id for p in truth if p.kind == "track" and p.indexed})
        started = time.perf_counter()
        song_track: dict[int, str] = {}
        for track in tracks:
            song, _ = await index_file(
                store, pool, root / manifest[track]["path"], SongMeta(track, external_id=track)
            )
            song_track[song.id] = track
        await store.optimize()
        print(
            f"indexed {len(tracks)} tracks in {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
        )
        if args.catalogue and (await store.stats()).songs != songs_before:
            print("warning: the catalogue lacked some of the program's tracks", file=sys.stderr)
        rng = random.Random(args.seed)
        shuffled = list(range(len(files)))
        rng.shuffle(shuffled)
        doubled = list(range(len(files))) + rng.sample(range(len(files)), len(files) // 3)
        rng.shuffle(doubled)
        deliveries = [
            ("in order", list(range(len(files))), 1),
            ("shuffled, 2 workers", shuffled, 2),
            ("shuffled + 1/3 duplicated, 2 workers", doubled, 2),
        ][: 1 if args.in_order_only else 3]
        base = datetime(2025, 1, 1, tzinfo=UTC)
        logs = {}
        lines += [
            "| delivery | plays found (>= 15 s) | split | start error | end error "
            "| invented plays | ms / segment | x real time |",
            "|---|---|---|---|---|---|---|---|",
        ]
        details: list[str] = []
        for (label, order, workers), name in zip(deliveries, STREAM_NAMES, strict=False):
            stream = f"bench-{name}{suffix}"
            ms = await deliver(store, pool, stream, files, order, workers, base, params)
            # The program is over: as the worker's sweep does after STREAM_PLAY_END_TIMEOUT_S.
            await end_idle_plays(store, 0.0)
            state = await store.get_stream(stream)
            assert state is not None
            page = await store.list_plays(state.id, from_s=None, to_s=None, limit=10000, offset=0)
            logs[label] = page.items
            if answers is not None:
                answers += play_rows(name, page.items, song_track)
            s = score_log(page.items, truth, song_track, t0)
            starts, ends = fmt_errors(s.start_errors or []), fmt_errors(s.end_errors or [])
            lines.append(
                f"| {label} | {s.found}/{s.eligible} | {s.split} | {starts} | {ends} "
                f"| {s.invented} | {ms:.0f} | {SEGMENT_S * 1000 / ms:.0f} |"
            )
            details += [f"- {label}: {d}" for d in s.invented_detail or []]
            print(lines[-1], file=sys.stderr)
        keys = [log_key(v) for v in logs.values()]
        same = all(k == keys[0] for k in keys)
        program_min = (truth[-1].end_s - truth[0].start_s) / 60
        eligible = sum(
            p.kind == "track" and p.indexed and p.end_s - p.start_s >= MIN_PLAY_S for p in truth
        )
        lines = [
            f"Program `{args.set}` ({'its first ' if args.segments else ''}"
            f"{program_min:.1f} min, {len(files)} segments of 12 s, "
            f"`{args.layout}` layout; {len(tracks)} indexed tracks in a catalogue of "
            f"{songs_before if args.catalogue else len(tracks):,} songs, "
            f"{eligible} aired >= 15 s; {sum(p.kind == 'talk' for p in truth)} talk gaps, "
            f"{sum(p.kind == 'track' and not p.indexed for p in truth)} unindexed tracks). "
            f"Times on the stream clock, compared with truth.csv."
            + (" Speed search off (`STREAM_SPEED_SEARCH=false`)." if args.no_speed_search else ""),
            "",
            *lines,
            "",
            *(
                []
                if args.in_order_only
                else [
                    f"Logs identical across the three deliveries: **{'yes' if same else 'NO'}** "
                    f"({len(keys[0])} plays; song, start, end and status compared once the "
                    "stream went quiet and its last play was ended by the timeout).",
                ]
            ),
            *(["", *details] if details else []),
        ]
    finally:
        pool.close()
        await store.close()
        if args.catalogue:
            await drop_streams(args.store, [f"bench-{n}{suffix}" for n in STREAM_NAMES])
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
        write_section(block, STREAMS_HEADING, this_command("benchmarks.streams"), lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The index formats side by side in one run: "fp1" (landmarks and the speed grid) against
"fp2" (landmarks and speed-invariant triplets, no grid).

For each format, on the same machine, the same tracks and the same clips:

1. the corpus's indexed tracks (`queries/dev/index_tracks.csv`) indexed through the service's
   own path (`index_path`: decode, fingerprint, store) into a fresh SQLite catalogue and, with
   `--pg DSN`, a fresh PostgreSQL one (compacted and vacuumed): bytes per hour of audio;
2. the fingerprinting CPU of `--cpu-tracks` of those tracks in this process (decode excluded,
   the formats interleaved track by track), in ms per second of audio;
3. every clip of `queries/dev/queries.csv` identified through the SQLite catalogue one at a
   time (`identify_file`, decode included: what the service's `elapsed_ms` says), plus clips
   this benchmark renders with sox from the same tracks at the clean clips' start positions:
   speed (tempo and pitch together) +-8 and +-10 %, tempo alone +-10 %, pitch alone +-10 %
   (`--no-render` skips them). Accuracy per condition and clip length, false positives on the
   clips of unindexed tracks, and latency of known, unknown, speed-changed and noisy clips.

    CORPUS_DIR=/path/to/corpus python -m benchmarks.formats --work DIR [--pg DSN]
        [--formats fp1,fp2] [--lengths 5,10] [--conditions a,b] [--cpu-tracks 12] [--write]

Rendered clips go to `DIR/rendered` and the catalogues to `DIR`; `--write` replaces the
formats block of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import numpy as np

from benchmarks.accuracy import OFFSET_TOLERANCE_S, Query, corpus_dir, load_queries
from benchmarks.benchmarks_md import this_command, write_section
from benchmarks.indexing import recreate_database
from service.audio.decode import decode_audio
from service.audio.params import FingerprintFormat, FingerprintParams, params_for_format
from service.audio.peaks import find_peaks
from service.audio.triplets import index_fingerprints
from service.core.identify.identify import identify_file
from service.core.index import IndexOptions, index_path
from service.executor import CpuPool
from service.match import MatchParams
from service.settings import Settings
from service.store import SongMeta, Store, create_store

HEADING = "## Index formats side by side (`benchmarks/formats.py`)"

#: Conditions rendered here from the tracks: name -> (sox effect, time scale of the clip).
RENDERED: dict[str, tuple[list[str], float]] = {
    "speed_p8": (["speed", "1.08"], 1.08),
    "speed_m8": (["speed", "0.92"], 0.92),
    "speed_p10": (["speed", "1.10"], 1.10),
    "speed_m10": (["speed", "0.90"], 0.90),
    "tempo_p10": (["tempo", "-m", "1.10"], 1.10),
    "tempo_m10": (["tempo", "-m", "0.90"], 0.90),
    "pitch_p10": (["pitch", "165"], 1.0),  # +10 % in frequency (165 cents)
    "pitch_m10": (["pitch", "-182"], 1.0),  # -10 %
}
#: Which conditions count as speed-changed and as noisy in the latency table.
SPEED_PREFIXES = ("speed_", "tempo_", "pitch_")
NOISY = ("white_snr0", "pink_snr0", "babble_snr0", "ambient_snr0")


@dataclass(frozen=True)
class Answer:
    query: Query
    answer: str
    offset_error_s: float | None
    elapsed_ms: float


def _tracks(root: Path) -> list[tuple[str, Path]]:
    with open(root / "queries" / "dev" / "index_tracks.csv") as f:
        return [(r["track_id"], root / r["path"]) for r in csv.DictReader(f)]


def _track_paths(root: Path) -> dict[str, Path]:
    with open(root / "manifest.csv") as f:
        return {r["track_id"]: root / r["path"] for r in csv.DictReader(f)}


def render_conditions(root: Path, queries: list[Query], out: Path) -> list[Query]:
    """RENDERED conditions of every clean clip: the same track and start, the source span
    time-scaled by sox so that the clip lasts as long as the clean one."""
    out.mkdir(parents=True, exist_ok=True)
    paths = _track_paths(root)
    rendered = []
    for q in queries:
        if q.condition != "clean":
            continue
        for name, (effect, scale) in RENDERED.items():
            target = out / f"{Path(q.file).stem}-{name}.wav"
            if not target.exists():
                subprocess.run(
                    ["sox", "-q", str(paths[q.track_id]), "-c", "1", str(target), "trim",
                     f"{q.start_s:.3f}", f"{q.clip_len_s * scale:.3f}", *effect],
                    check=True,
                )  # fmt: skip
            rendered.append(
                Query(str(target), q.track_id, q.expected, q.start_s, q.clip_len_s, scale, name,
                      q.loop_period_s)
            )  # fmt: skip
    return rendered


async def index_catalogue(
    url: str, params: FingerprintParams, tracks: list[tuple[str, Path]], workers: int
) -> tuple[Store, float, int, int, float]:
    """(opened store, hours, fingerprints, database bytes, wall s) after indexing `tracks`."""
    store = create_store(Settings(database_url=url), params.version)
    await store.open()
    pool = CpuPool(workers)
    started = time.perf_counter()
    try:
        indexed = await asyncio.gather(
            *(
                index_path(store, pool, p, IndexOptions(SongMeta(t, external_id=t)), params=params)
                for t, p in tracks
            )
        )
        await store.optimize()
    finally:
        pool.close()
    wall = time.perf_counter() - started
    stats = await store.stats()
    hours = sum(i.song.duration_s for i in indexed) / 3600
    return store, hours, stats.fingerprints, int(stats.extra.get("database_bytes", 0)), wall


async def pg_index_bytes(url: str) -> int:
    """Bytes of the PostgreSQL fingerprint index: postings, delta and tombstones."""
    conn = await asyncpg.connect(url)
    try:
        return int(
            await conn.fetchval(
                "SELECT pg_total_relation_size('fp_postings') + pg_total_relation_size("
                "'fingerprints') + pg_total_relation_size('fp_tombstones')"
            )
        )
    finally:
        await conn.close()


def fingerprint_cpu_ms_per_s(
    tracks: list[tuple[str, Path]], formats: list[FingerprintFormat]
) -> dict[str, float]:
    """CPU ms per second of audio of peaks + hashes, per format, formats interleaved."""
    spent = dict.fromkeys(formats, 0.0)
    seconds = 0.0
    for _, path in tracks:
        audio = decode_audio(path, params_for_format(formats[0]).sample_rate_hz)
        seconds += audio.duration_s
        for fmt in formats:
            params = params_for_format(fmt)
            started = time.process_time()
            index_fingerprints(find_peaks(audio.samples, params), params)
            spent[fmt] += time.process_time() - started
    return {fmt: 1000 * s / max(seconds, 1e-9) for fmt, s in spent.items()}


async def identify_all(
    store: Store, params: FingerprintParams, queries: list[Query], root: Path
) -> list[Answer]:
    pool = CpuPool(1, use_processes=False)
    mp = MatchParams()
    out = []
    try:
        for q in queries:
            path = root / "queries" / "dev" / q.file
            result = await identify_file(store, pool, path, mp, params)
            answer, error = "none", None
            if result.matches:
                best = result.matches[0]
                answer = best.song.external_id or ""
                if answer == q.expected:
                    error = abs(best.match.song_offset_s - q.start_s)
                    if q.loop_period_s:
                        p = q.loop_period_s
                        error = min(error % p, p - error % p)
            out.append(Answer(q, answer, error, result.elapsed_ms))
    finally:
        pool.close()
    return out


def _pct(n: int, d: int) -> str:
    return f"{100 * n / d:.1f} %" if d else "-"


def accuracy_lines(runs: dict[str, list[Answer]]) -> list[str]:
    formats = list(runs)
    cells: dict[tuple[str, int], dict[str, list[Answer]]] = defaultdict(lambda: defaultdict(list))
    for fmt, answers in runs.items():
        for a in answers:
            cells[(a.query.condition, a.query.clip_len_s)][fmt].append(a)
    head = " | ".join(f"{f} correct | {f} offset ok" for f in formats)
    lines = [
        f"| condition | clip | n | {head} | change |",
        "|---|---|---|" + "---|---|" * len(formats) + "---|",
    ]
    fp: dict[int, dict[str, list[Answer]]] = defaultdict(lambda: defaultdict(list))
    for (cond, length), by_fmt in sorted(cells.items()):
        row = []
        rates = []
        n = 0
        for fmt in formats:
            known = [a for a in by_fmt[fmt] if a.query.expected != "none"]
            fp[length][fmt] += [a for a in by_fmt[fmt] if a.query.expected == "none"]
            n = len(known)
            right = [a for a in known if a.answer == a.query.expected]
            ok = sum(
                a.offset_error_s is not None and a.offset_error_s <= OFFSET_TOLERANCE_S
                for a in right
            )
            rates.append(len(right))
            row.append(f"{_pct(len(right), n)} | {_pct(ok, len(right))}")
        if not n:
            continue
        change = f"{rates[-1] - rates[0]:+d} clips" if len(rates) > 1 else ""
        lines.append(f"| {cond} | {length} s | {n} | " + " | ".join(row) + f" | {change} |")
    lines += ["", "| clip | unindexed clips | " + " | ".join(f"{f} answered" for f in formats)]
    lines[-1] += " |"
    lines.append("|---|---|" + "---|" * len(formats))
    for length, by_fmt in sorted(fp.items()):
        n = len(by_fmt[formats[0]])
        answered = [sum(a.answer != "none" for a in by_fmt[f]) for f in formats]
        lines.append(
            f"| {length} s | {n} | " + " | ".join(f"{k} ({_pct(k, n)})" for k in answered) + " |"
        )
    wrong = {
        f: sum(
            a.answer not in ("none", a.query.expected)
            for a in runs[f]
            if a.query.expected != "none"
        )
        for f in formats
    }
    lines += [
        "",
        "Wrong song answered to indexed clips: "
        + ", ".join(f"{f} {w}" for f, w in wrong.items())
        + ".",
    ]
    return lines


def _kind(a: Answer) -> str | None:
    q = a.query
    if q.expected == "none":
        return "unknown (clean, mp3)" if q.condition in ("clean", "mp3_64k") else None
    if q.condition in ("clean", "mp3_64k"):
        return "known (clean, mp3)"
    if q.condition.startswith(SPEED_PREFIXES):
        return "speed, tempo or pitch changed"
    if q.condition in NOISY:
        return "noisy (0 dB)"
    return None


def latency_lines(runs: dict[str, list[Answer]], length: int) -> list[str]:
    formats = list(runs)
    lines = [
        f"| {length}-s clips | n | "
        + " | ".join(f"{f} p50 ms | {f} p95 ms" for f in formats)
        + " |",
        "|---|---|" + "---|---|" * len(formats),
    ]
    kinds = [
        "known (clean, mp3)",
        "unknown (clean, mp3)",
        "speed, tempo or pitch changed",
        "noisy (0 dB)",
    ]
    for kind in kinds:
        row, n = [], 0
        for fmt in formats:
            ms = [
                a.elapsed_ms for a in runs[fmt] if a.query.clip_len_s == length and _kind(a) == kind
            ]
            n = len(ms)
            if ms:
                row.append(f"{statistics.median(ms):.0f} | {np.percentile(ms, 95):.0f}")
            else:
                row.append("- | -")
        lines.append(f"| {kind} | {n} | " + " | ".join(row) + " |")
    return lines


async def run(args: argparse.Namespace) -> list[str]:
    root = corpus_dir()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    formats: list[FingerprintFormat] = args.formats.split(",")  # type: ignore[assignment]
    lengths = {int(x) for x in args.lengths.split(",")}
    queries = load_queries(
        root, set(args.conditions.split(",")) if args.conditions else None, lengths, False, False
    )
    if not args.no_render:
        queries += render_conditions(root, queries, work / "rendered")
    tracks = _tracks(root)
    storage: dict[str, tuple[float, int, int, int, float]] = {}
    runs: dict[str, list[Answer]] = {}
    for fmt in formats:
        params = params_for_format(fmt)
        db = work / f"{fmt}.sqlite3"
        db.unlink(missing_ok=True)
        store, hours, fingerprints, sqlite_bytes, wall = await index_catalogue(
            f"sqlite:///{db}", params, tracks, args.workers
        )
        print(
            f"{fmt}: indexed {len(tracks)} tracks, {hours:.2f} h in {wall:.0f} s", file=sys.stderr
        )
        pg_bytes = 0
        if args.pg:
            url = await recreate_database(args.pg, f"bench_formats_{fmt}")
            pg_store, *_ = await index_catalogue(url, params, tracks, args.workers)
            await pg_store.close()
            pg_bytes = await pg_index_bytes(url)
        storage[fmt] = (hours, fingerprints, sqlite_bytes, pg_bytes, wall)
        started = time.perf_counter()
        try:
            runs[fmt] = await identify_all(store, params, queries, root)
        finally:
            await store.close()
        print(
            f"{fmt}: {len(queries)} clips in {time.perf_counter() - started:.0f} s", file=sys.stderr
        )
    cpu_tracks = tracks[: args.cpu_tracks]
    cpu = await asyncio.to_thread(fingerprint_cpu_ms_per_s, cpu_tracks, formats)
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other work, "
        f"Python {platform.python_version()}; {datetime.now(UTC):%Y-%m-%d}. "
        f"Catalogue: {len(tracks)} tracks of the development corpus; clips: "
        f"{len({a.query.file for a in next(iter(runs.values()))})} "
        f"(every condition of the same tracks and starts), identified one at a time through "
        "SQLite, decode included.",
        "",
        "**Accuracy** (correct song; offset within 0.5 s of the truth):",
        "",
        *accuracy_lines(runs),
        "",
        "**Latency** (ms, `identify_file`: decode to answer, SQLite, one clip at a time):",
        "",
    ]
    for length in sorted(lengths, reverse=True):
        lines += [*latency_lines(runs, length), ""]
    lines += [
        "**Index size and indexing CPU:**",
        "",
        "| format | hours | fingerprints per s of audio | SQLite MB per hour"
        + (" | PostgreSQL index MB per hour" if args.pg else "")
        + " | fingerprinting CPU ms per s of audio |",
        "|---|---|---|---|" + ("---|" if args.pg else "") + "---|",
    ]
    for fmt, (hours, fingerprints, sqlite_bytes, pg_bytes, _) in storage.items():
        lines.append(
            f"| {fmt} | {hours:.2f} | {fingerprints / hours / 3600:.0f} | "
            f"{sqlite_bytes / hours / 1e6:.1f} | "
            + (f"{pg_bytes / hours / 1e6:.1f} | " if args.pg else "")
            + f"{cpu[fmt]:.2f} |"
        )
    lines.append("")
    lines.append(
        f"Fingerprinting CPU: peaks and hashes of {len(cpu_tracks)} tracks in this process, "
        "the formats interleaved track by track (decode excluded; it is the same for both)."
    )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", required=True, help="folder for catalogues and rendered clips")
    parser.add_argument("--formats", default="fp1,fp2")
    parser.add_argument("--lengths", default="5,10")
    parser.add_argument("--conditions", help="comma-separated conditions of queries.csv")
    parser.add_argument("--no-render", action="store_true", help="no rendered speed conditions")
    parser.add_argument("--pg", help="PostgreSQL admin DSN: also measure its index size")
    parser.add_argument("--workers", type=int, default=2, help="indexing processes")
    parser.add_argument("--cpu-tracks", type=int, default=12)
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    lines = asyncio.run(run(args))
    print("\n".join(lines))
    if args.write:
        write_section("formats", HEADING, this_command("benchmarks.formats"), lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

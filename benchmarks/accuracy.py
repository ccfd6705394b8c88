"""Accuracy benchmark on the development corpus (../shared/corpus).

Indexes the corpus's indexed tracks, runs every degraded query clip, and prints a table per
condition x clip length: correct, wrong song, no answer, false positives on unindexed clips,
median offset error and query time; plus fingerprints per second and index size.

    CORPUS_DIR=/path/to/corpus python -m benchmarks.accuracy [--quick] [--store URL] [--write]
        [--answers FILE] [--format fp1|fp2] [--render DIR]

Build the corpus first with the scripts in ../shared/corpus (see its README). `--quick` runs
one clip per track for a subset of conditions; `--store URL` indexes and queries through a
real catalogue (`sqlite:///...` or `postgresql://...`, which must be empty) exactly as the
service does, and reports its size; without it an in-memory index with the same lookup
contract serves parameter sweeps. `--write` replaces the accuracy section of BENCHMARKS.md.
`--answers FILE` writes every clip's answer as sorted JSON lines (benchmarks/answers.py):
its song's corpus track id or none, offset, confidence, score, speed and evidence, and every
other match found, for `benchmarks/compare_answers.py`. The in-memory index reads the tracks'
fingerprints from `$CORPUS_DIR/.fpcache` once computed; to compare two versions of the code,
give `--no-fp-cache` so that each run fingerprints the tracks with its own code.
`--format` measures an index format (FINGERPRINT_FORMAT; its table is written to a block of
its own); `--render DIR` adds speed, tempo and pitch changes of +-8 and +-10 % that sox renders
from the tracks at the clean clips' starts (benchmarks/formats.py).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import multiprocessing
import os
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.answers import commit, match_fields, write_answers
from benchmarks.benchmarks_md import this_command, write_section
from benchmarks.memindex import MemoryCatalogue, MemoryIndex
from service.audio.analysis import analyse_file, analyse_query
from service.audio.envelopes import DEFAULT_ENVELOPE
from service.audio.params import DEFAULT_PARAMS, params_for_format
from service.core.identify.identify import identify_analysed
from service.core.index import IndexOptions, index_path
from service.executor import CpuPool
from service.match import MatchParams
from service.settings import Settings
from service.store import Song, SongMeta, create_store

QUICK_CONDITIONS = (
    "clean,mp3_64k,aac_48k,white_snr0,pink_snr0,white_snrm5,babble_snr0,ambient_snr0,"
    "speed_p2,speed_m5,pitch_p1st,tempo_m5,telephone,gain_m20db,envelope"
)
OFFSET_TOLERANCE_S = 0.5
ACCURACY_HEADING = "## Accuracy, every condition (`benchmarks/accuracy.py`)"


@dataclass(frozen=True)
class Query:
    file: str
    track_id: str
    expected: str  # track id or "none"
    start_s: float
    clip_len_s: int
    time_scale: float
    condition: str
    loop_period_s: float | None


@dataclass(frozen=True)
class Outcome:
    query: Query
    answer: str  # track id or "none"
    offset_error_s: float | None
    confidence: float
    speed: float
    elapsed_ms: float
    #: What decided the answer (Match.evidence), "" for no answer.
    evidence: str = ""
    #: Every match found, best first: its track id and match_fields (for --answers).
    matches: tuple[dict[str, object], ...] = ()


def corpus_dir() -> Path:
    return Path(os.environ.get("CORPUS_DIR", Path.cwd() / "corpus"))


def _fingerprint_track(
    args: tuple[str, str, str],
) -> tuple[str, np.ndarray, np.ndarray, int, tuple[int, np.ndarray]]:
    track_id, path, cache = args  # cache "": fingerprint afresh, keep nothing
    cache_file = Path(cache) / f"{track_id}-env{DEFAULT_ENVELOPE.format}.npz"
    if cache and cache_file.exists():
        data = np.load(cache_file)
        envelope = (DEFAULT_ENVELOPE.format, data["envelope"])
        return track_id, data["hashes"], data["offsets"], int(data["n_frames"]), envelope
    audio = analyse_file(path, _PARAMS)
    fp = audio.fingerprints
    assert audio.envelope is not None
    if cache:
        np.savez(
            cache_file,
            hashes=fp.hashes,
            offsets=fp.offsets,
            n_frames=audio.n_frames,
            envelope=audio.envelope,
        )
    return track_id, fp.hashes, fp.offsets, audio.n_frames, (audio.envelope_format, audio.envelope)


_INDEX: MemoryIndex | None = None
_TRACK_IDS: list[str] = []
_MATCH = MatchParams()
#: The index format measured (--format).
_PARAMS = DEFAULT_PARAMS
_STORE_URL: str | None = None
_WORKER_STATE: dict[str, object] = {}


def _catalogue() -> object:
    """This process's catalogue: the in-memory index, or a store opened once per process."""
    if _STORE_URL is None:
        assert _INDEX is not None
        return MemoryCatalogue(_INDEX, _TRACK_IDS)
    if "store" not in _WORKER_STATE:
        loop = asyncio.new_event_loop()
        store = create_store(Settings(database_url=_STORE_URL), _PARAMS.version)
        loop.run_until_complete(store.open())
        _WORKER_STATE.update(loop=loop, store=store)
    return _WORKER_STATE["store"]


def _run_query(q: Query) -> Outcome:
    started = time.perf_counter()
    audio = analyse_query(corpus_dir() / "queries" / "dev" / q.file, _PARAMS)
    catalogue = _catalogue()
    run = identify_analysed(catalogue, audio, _MATCH, _PARAMS)  # type: ignore[arg-type]
    loop = _WORKER_STATE.get("loop")
    found = loop.run_until_complete(run) if loop else asyncio.run(run)  # type: ignore[attr-defined]
    elapsed_ms = (time.perf_counter() - started) * 1000
    if not found:
        return Outcome(q, "none", None, 0.0, 1.0, elapsed_ms)
    tracks = [
        _TRACK_IDS[m.match.song_id] if _STORE_URL is None else m.song.external_id for m in found
    ]
    matches = tuple(
        {"song": t, **match_fields(m.match)} for t, m in zip(tracks, found, strict=True)
    )
    best = found[0].match
    answer = tracks[0]
    error = None
    if answer == q.expected:
        # The clip's first sample sits at start_s in the track whatever its speed.
        error = abs(best.song_offset_s - q.start_s)
        if q.loop_period_s:
            error = min(error % q.loop_period_s, q.loop_period_s - error % q.loop_period_s)
    return Outcome(
        q, answer, error, best.confidence, best.speed, elapsed_ms, best.evidence, matches
    )


def answer_rows(outcomes: list[Outcome]) -> list[dict[str, object]]:
    """One row per clip for --answers: the clip, its song's track id or None, and where."""
    rows = []
    for o in outcomes:
        q = o.query
        top = o.matches[0] if o.matches else {}
        rows.append(
            {
                "key": [q.file],
                "clip": q.file,
                "condition": q.condition,
                "clip_len_s": q.clip_len_s,
                "expected": q.expected,
                "song": top.get("song"),
                **{f: top.get(f) for f in ("song_offset_s", "confidence", "score", "speed")},
                "evidence": top.get("evidence"),
                "matches": list(o.matches),
            }
        )
    return rows


def load_queries(
    root: Path, conditions: set[str] | None, lengths: set[int], quick: bool, unindexed_only: bool
):
    queries = []
    seen: set[tuple[str, str, int]] = set()
    with open(root / "queries" / "dev" / "queries.csv") as f:
        for row in csv.DictReader(f):
            length = int(float(row["clip_len_s"]))
            if (conditions and row["condition"] not in conditions) or length not in lengths:
                continue
            if unindexed_only and row["expected"] != "none":
                continue
            key = (row["track_id"], row["condition"], length)
            if quick and key in seen:
                continue
            seen.add(key)
            queries.append(
                Query(
                    file=row["query_file"],
                    track_id=row["track_id"],
                    expected=row["expected"],
                    start_s=float(row["start_s"]),
                    clip_len_s=length,
                    time_scale=float(row["time_scale"]),
                    condition=row["condition"],
                    loop_period_s=float(row["loop_period_s"]) if row["loop_period_s"] else None,
                )
            )
    return queries


def build_index(
    root: Path, workers: int, use_cache: bool = True
) -> tuple[MemoryIndex, list[str], float, float]:
    """The in-memory index of the indexed tracks, their fingerprints read from
    `$CORPUS_DIR/.fpcache/<parameters version>/` when `use_cache` and computed before."""
    with open(root / "queries" / "dev" / "index_tracks.csv") as f:
        tracks = [(r["track_id"], str(root / r["path"])) for r in csv.DictReader(f)]
    cache = root / ".fpcache" / _PARAMS.version
    if use_cache:
        cache.mkdir(parents=True, exist_ok=True)
    index = MemoryIndex()
    track_ids: list[str] = []
    total_frames = 0
    started = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        args = [(t, p, str(cache) if use_cache else "") for t, p in tracks]
        for track_id, hashes, offsets, n_frames, envelope in pool.imap(_fingerprint_track, args):
            index.add(len(track_ids), hashes, offsets, n_frames, envelope)
            track_ids.append(track_id)
            total_frames += n_frames
    hours = total_frames * DEFAULT_PARAMS.frame_s / 3600
    print(
        f"indexed {len(track_ids)} tracks, {hours:.2f} h, {index.size} fingerprints "
        f"({index.size / hours / 3600:.0f}/s of audio) in {time.perf_counter() - started:.0f} s",
        file=sys.stderr,
    )
    return index, track_ids, hours, index.size / hours / 3600


async def index_into_store(root: Path, url: str, workers: int) -> tuple[float, float, int]:
    """Index every indexed track through the service's path; (hours, fp per s, bytes)."""
    with open(root / "queries" / "dev" / "index_tracks.csv") as f:
        tracks = [(r["track_id"], root / r["path"]) for r in csv.DictReader(f)]
    store = create_store(Settings(database_url=url), _PARAMS.version)
    await store.open()
    pool = CpuPool(workers)
    started = time.perf_counter()
    try:
        if (await store.stats()).songs:
            raise SystemExit(f"{url} already holds songs; give an empty catalogue")

        async def one(track_id: str, path: Path) -> Song:
            meta = SongMeta(track_id, external_id=track_id)
            indexed = await index_path(store, pool, path, IndexOptions(meta), params=_PARAMS)
            return indexed.song

        songs = await asyncio.gather(*(one(t, p) for t, p in tracks))
        await store.optimize()
        stats = await store.stats()
    finally:
        pool.close()
        await store.close()
    hours = sum(s.duration_s for s in songs) / 3600
    print(
        f"indexed {len(songs)} tracks ({hours:.2f} h) into {url.split('://')[0]} in "
        f"{time.perf_counter() - started:.0f} s",
        file=sys.stderr,
    )
    return hours, stats.fingerprints / hours / 3600, int(stats.extra.get("database_bytes", 0))


def false_positive_breakdown(unindexed: list[Outcome]) -> list[str]:
    """Which unindexed tracks were answered with which songs: chance, or shared material?"""
    if not unindexed:
        return []
    names = _track_names()
    per_track: dict[str, dict[int, list[Outcome]]] = defaultdict(lambda: defaultdict(list))
    for o in unindexed:
        per_track[o.query.track_id][o.query.clip_len_s].append(o)
    lengths = sorted({o.query.clip_len_s for o in unindexed})
    lines = [
        "",
        "| unindexed track | " + " | ".join(f"{n} s answered" for n in lengths) + " | with |",
        "|---|" + "---|" * len(lengths) + "---|",
    ]
    quiet = 0
    for track, by_len in sorted(per_track.items(), key=lambda kv: names.get(kv[0], kv[0])):
        answered = [o for outs in by_len.values() for o in outs if o.answer != "none"]
        if not answered:
            quiet += 1
            continue
        cells = [
            f"{sum(o.answer != 'none' for o in by_len[n])} / {len(by_len[n])}" for n in lengths
        ]
        answers = sorted({f"{names.get(o.answer, o.answer)} ({o.speed:.3f}x)" for o in answered})
        lines.append(
            f"| {names.get(track, track)} | " + " | ".join(cells) + f" | {', '.join(answers)} |"
        )
    lines.append(
        f"| the other {quiet} unindexed tracks | " + " | ".join("0" for _ in lengths) + " | |"
    )
    return lines


def _track_names() -> dict[str, str]:
    with open(corpus_dir() / "manifest.csv") as f:
        return {r["track_id"]: r["path"].removeprefix("tracks/") for r in csv.DictReader(f)}


def summarise(outcomes: list[Outcome]) -> list[str]:
    cells: dict[tuple[str, int], list[Outcome]] = defaultdict(list)
    for o in outcomes:
        cells[(o.query.condition, o.query.clip_len_s)].append(o)
    lines = [
        "| condition | clip | n | correct | wrong song | no answer | offset ok | "
        "median offset err | median query ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    fp_by_len: dict[int, list[Outcome]] = defaultdict(list)
    wrong_total = indexed_total = 0
    for (cond, length), cell in sorted(cells.items()):
        known = [o for o in cell if o.query.expected != "none"]
        fp_by_len[length] += [o for o in cell if o.query.expected == "none"]
        if not known:
            continue
        correct = [o for o in known if o.answer == o.query.expected]
        wrong = [o for o in known if o.answer not in ("none", o.query.expected)]
        none = [o for o in known if o.answer == "none"]
        errors = [o.offset_error_s for o in correct if o.offset_error_s is not None]
        offset_ok = sum(e <= OFFSET_TOLERANCE_S for e in errors)
        wrong_total += len(wrong)
        indexed_total += len(known)
        n = len(known)
        lines.append(
            f"| {cond} | {length} s | {n} | {100 * len(correct) / n:.1f} % | "
            f"{100 * len(wrong) / n:.1f} % | {100 * len(none) / n:.1f} % | "
            f"{100 * offset_ok / max(len(correct), 1):.1f} % | "
            f"{statistics.median(errors) if errors else float('nan'):.3f} s | "
            f"{statistics.median(o.elapsed_ms for o in cell):.0f} |"
        )
    lines.append("")
    lines.append("| clip | unindexed clips | answered with a song (false positives) |")
    lines.append("|---|---|---|")
    for length, fps in sorted(fp_by_len.items()):
        answered = sum(o.answer != "none" for o in fps)
        lines.append(f"| {length} s | {len(fps)} | {100 * answered / max(len(fps), 1):.2f} % |")
    lines += false_positive_breakdown([o for fps in fp_by_len.values() for o in fps])
    if not indexed_total:  # --unindexed-only: the per-condition table has no rows
        return lines[3:]
    lines.append("")
    lines.append(
        f"Wrong song answered over all indexed clips: {wrong_total}/{indexed_total} "
        f"({100 * wrong_total / max(indexed_total, 1):.2f} %)."
    )
    by_envelope = [o for o in outcomes if o.evidence == "envelope"]
    right = sum(o.answer == o.query.expected for o in by_envelope)
    lines.append(
        f"Answers confirmed by band envelopes (the landmarks alone left the clip undecided): "
        f"{len(by_envelope)}, {right} of them right, "
        f"{sum(o.query.expected == 'none' for o in by_envelope)} of them to unindexed clips."
    )
    return lines


def main() -> int:
    global _INDEX, _TRACK_IDS, _STORE_URL, _MATCH, _PARAMS
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one clip per track, fewer cases")
    parser.add_argument("--conditions", help="comma-separated condition names")
    parser.add_argument("--lengths", default="3,5,10")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--store", help="index and query through this catalogue URL")
    parser.add_argument(
        "--unindexed-only", action="store_true", help="only clips of unindexed tracks"
    )
    parser.add_argument(
        "--no-envelope-check",
        action="store_true",
        help="landmarks alone (MatchParams.envelope_check=None), for side-by-side runs",
    )
    parser.add_argument(
        "--format", default="fp1", choices=["fp1", "fp2"], help="the index format measured"
    )
    parser.add_argument(
        "--render",
        metavar="DIR",
        help="also render speed, tempo and pitch changes of +-8/+-10 %% from the tracks at the "
        "clean clips' starts into DIR (benchmarks/formats.py, RENDERED)",
    )
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    parser.add_argument("--answers", help="write every clip's answer to this JSON-lines file")
    parser.add_argument(
        "--no-fp-cache",
        action="store_true",
        help="fingerprint the indexed tracks afresh instead of reading $CORPUS_DIR/.fpcache "
        "(which is keyed by the fingerprint parameters only, not by the code that made it)",
    )
    args = parser.parse_args()
    at_commit = commit()
    _PARAMS = params_for_format(args.format)
    if args.no_envelope_check:
        _MATCH = MatchParams(envelope_check=None)
    root = corpus_dir()
    conditions = args.conditions or (QUICK_CONDITIONS if args.quick else None)
    queries = load_queries(
        root,
        set(conditions.split(",")) if conditions else None,
        {int(x) for x in args.lengths.split(",")},
        args.quick,
        args.unindexed_only,
    )
    if args.render:
        from benchmarks.formats import render_conditions  # formats.py imports this module

        queries += render_conditions(root, queries, Path(args.render))
    db_bytes = 0
    if args.store:
        _STORE_URL = args.store
        hours, fps, db_bytes = asyncio.run(index_into_store(root, args.store, args.workers))
    else:
        _INDEX, _TRACK_IDS, hours, fps = build_index(root, args.workers, not args.no_fp_cache)
    started = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(args.workers) as pool:
        outcomes = pool.map(_run_query, queries, chunksize=16)
    print(f"{len(queries)} queries in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    lines = summarise(outcomes)
    where = args.store.split("://")[0] if args.store else "in-memory index"
    lines.append(
        f"Index ({where}): {hours:.2f} h of audio, {fps:.0f} fingerprints per second of audio"
        + (f", {db_bytes / hours / 1e6:.1f} MB of database per hour" if db_bytes else "")
        + f"; fingerprint parameters {_PARAMS.version}; median query ms include decode."
    )
    print("\n".join(lines))
    if args.answers:
        write_answers(args.answers, "accuracy", answer_rows(outcomes), at_commit)
    if args.write:
        section = "accuracy-quick" if args.quick else "accuracy"
        if args.unindexed_only:
            section += "-unindexed"
        if args.no_envelope_check:
            section += "-landmarks-only"
        if args.format != "fp1":
            section += f"-{args.format}"
        write_section(section, ACCURACY_HEADING, this_command("benchmarks.accuracy", root), lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

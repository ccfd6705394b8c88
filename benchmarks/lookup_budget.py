"""What the lookup budget (`MAX_HITS_PER_LOOKUP`, MatchParams.max_hits_per_lookup) trades at a
large catalogue: answers against time and memory per request.

Every tier past the first fetches under the budget, so at a catalogue of thousands of songs it
decides what a clip the first tier leaves undecided costs: clips under heavy noise, which the
deeper tiers rescue, clips played 5 % slow, and clips of music the catalogue lacks, which
climb every tier (any match of one is a false positive). This asks such clips of the
development query set against a catalogue `benchmarks/latency.py` built (the corpus's indexed
tracks plus synthetic songs, `--database`), in this process, under each budget in turn for
every clip (side by side, clip by clip), and reports right / no answer / wrong, the median time
and the largest traced memory (tracemalloc: numpy's arrays included) per budget and condition.
`--uncounted` also runs the budgets it lists with the chance model blind to what the budget
left out (records.LeftOut), to show what counting it buys; `--triplet-budgets` runs each budget
under each of the triplets' first budgets it lists (MatchParams.max_hits_triplets, "fp2"), and
`--complete-candidates` under each number of candidates completed it lists
(MatchParams.complete_candidates; 0: none).
Each clip is identified once, untimed, before the budgets are measured on it, so that none pays
for the database's cold cache.

    CORPUS_DIR=... python -m benchmarks.lookup_budget --database postgresql://…/sd_curve_fp2_10000
        --format fp2 [--budgets 1000000,4000000] [--clips 30] [--unknown-clips 28]
        [--uncounted 1000000] [--triplet-budgets 150000,400000] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import os
import random
import statistics
import sys
import time
import tracemalloc
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.benchmarks_md import publish_catalogue_table
from benchmarks.latency_clips import held_out_track, indexed_name, queries_dir
from service.audio.analysis import analyse_query
from service.audio.params import params_for_format
from service.core.identify.identify import identify_analysed
from service.errors import StoreUnavailable
from service.match import MatchParams
from service.settings import Settings
from service.store import Hits, Store
from service.store.factory import create_store

SECTION = "## Lookup budget at a large catalogue (`benchmarks/lookup_budget.py`)"
#: (condition, clip length s, indexed): heavy noise the deeper tiers rescue, a speed change
#: ("fp1" finds it with the speed grid, past the first tier), and music the catalogue lacks
#: (its clips climb every tier, and any match of one is a false positive).
CASES = (
    ("babble_snr0", "10", "1"),
    ("babble_snr0", "5", "1"),
    ("white_snrm5", "5", "1"),
    ("white_snrm5", "10", "1"),
    ("speed_m5", "10", "1"),
    ("mp3_64k", "10", "0"),
    ("clean", "5", "0"),
    ("speed_p5", "10", "0"),
)


@dataclass(frozen=True)
class Clip:
    path: Path
    case: tuple[str, str, str]
    #: The file name its track is indexed under (its song's source), "" for unindexed tracks.
    expected: str


def clips(per_case: int, unknown_per_case: int, seed: int = 7) -> list[Clip]:
    """`per_case` clips of each case of indexed tracks (of the songs held out of the synthetic
    songs' distribution: benchmarks/hash_space.held_out) and `unknown_per_case` of each case
    of unindexed ones, drawn at random (seeded) from the query set."""
    root = queries_dir()
    with (root / "index_tracks.csv").open() as f:
        paths = {r["track_id"]: r["path"] for r in csv.DictReader(f)}
    with (root / "queries.csv").open() as f:
        rows = list(csv.DictReader(f))
    chosen = []
    for case in CASES:
        condition, length, indexed = case
        matching = [
            r
            for r in rows
            if (r["condition"], r["clip_len_s"], r["indexed"]) == (condition, length, indexed)
            and (indexed == "0" or held_out_track(paths[r["track_id"]]))
        ]
        wanted = per_case if indexed == "1" else unknown_per_case
        picked = random.Random(seed).sample(matching, min(wanted, len(matching)))
        for r in picked:
            expected = str(indexed_name(paths[r["track_id"]])) if indexed == "1" else ""
            chosen.append(Clip(root / r["query_file"], case, expected))
    return chosen


def _verdict(clip: Clip, source: str | None) -> str:
    """right / none / wrong for the top match's song source (None: no match); a clip of an
    unindexed track is right with no match, wrong with any."""
    if not clip.expected:
        return "right" if source is None else "wrong"
    if source is None:
        return "none"
    return "right" if Path(source).name == clip.expected else "wrong"


class _Uncounted:
    """A store whose lookups say which hashes their budget left out (the hit cache asks them
    again) but not that they hold any postings: the chance model then sees only the hits the
    budget kept (`--uncounted`, for comparison)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def lookup(
        self, hashes: np.ndarray, max_postings: int | None = None, max_hits: int | None = None
    ) -> Hits:
        hits = await self._store.lookup(hashes, max_postings, max_hits)
        left = hits.left_out
        return replace(hits, left_out=replace(left, postings=np.zeros_like(left.postings)))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@dataclass(frozen=True)
class Config:
    """One configuration measured."""

    #: MatchParams.max_hits_per_lookup.
    budget: int
    #: Whether the chance model counts what the budgets left out.
    counted: bool = True
    #: MatchParams.max_hits_triplets (None: its default).
    triplets: int | None = None
    #: MatchParams.complete_candidates (None: its default).
    complete: int | None = None

    def match_params(self) -> MatchParams:
        mp = replace(MatchParams(), max_hits_per_lookup=self.budget)
        if self.triplets is not None:
            mp = replace(mp, max_hits_triplets=self.triplets)
        if self.complete is not None:
            mp = replace(mp, complete_candidates=self.complete)
        return mp

    def label(self) -> str:
        text = f"{self.budget:,}"
        if self.triplets is not None:
            text += f", triplets first {self.triplets:,}"
        if self.complete is not None:
            text += f", {self.complete} candidates completed"
        return text + ("" if self.counted else ", left out not counted")


async def measure(args: argparse.Namespace) -> dict[tuple[Config, tuple[str, str, str]], dict]:
    params = params_for_format(args.format)
    store = create_store(
        Settings(database_url=args.database, fingerprint_format=args.format), params.version
    )
    await store.open()
    triplets = args.triplet_budgets or [None]
    completes = args.complete_candidates or [None]
    configs = [Config(b, True, t, c) for b in args.budgets for t in triplets for c in completes]
    configs += [
        Config(b, True, None, c) for b, c in args.configs if Config(b, True, None, c) not in configs
    ]
    configs += [Config(b, False) for b in args.uncounted]
    stores = {True: store, False: _Uncounted(store)}
    results: dict[tuple[Config, tuple[str, str, str]], dict] = {}
    tracemalloc.start()
    try:
        for clip in clips(args.clips, args.unknown_clips):
            audio = analyse_query(clip.path, params)
            # Once untimed under the largest budget, so that no configuration pays for
            # reading the clip's postings into the database's cache.
            warm = replace(MatchParams(), max_hits_per_lookup=max(c.budget for c in configs))
            with contextlib.suppress(StoreUnavailable):
                await identify_analysed(store, audio, warm, params)
            for config in configs:
                mp = config.match_params()
                tracemalloc.reset_peak()
                before = tracemalloc.get_traced_memory()[0]
                started = time.perf_counter()
                try:
                    matches = await identify_analysed(stores[config.counted], audio, mp, params)
                    verdict = _verdict(clip, matches[0].song.source or "" if matches else None)
                except StoreUnavailable:
                    # A lookup past the store's statement timeout: the service answers 503.
                    verdict = "timeout"
                ms = (time.perf_counter() - started) * 1000.0
                mb = (tracemalloc.get_traced_memory()[1] - before) / 1e6
                row = results.setdefault(
                    (config, clip.case),
                    {"right": 0, "none": 0, "wrong": 0, "timeout": 0, "ms": [], "mb": []},
                )
                row[verdict] += 1
                row["ms"].append(ms)
                row["mb"].append(mb)
    finally:
        await store.close()
    return results


def report(results: dict, args: argparse.Namespace) -> list[str]:
    lines = [
        f"Machine: {os.uname().machine}, {os.cpu_count()} cores shared with other work, "
        "PostgreSQL on the same host. Catalogue: "
        f"`{args.database.rsplit('/', 1)[-1]}` (fingerprints "
        f"{params_for_format(args.format).version}). "
        f"Measured {time.strftime('%Y-%m-%d')}.",
        "",
        "**Lookup budget against recall, time and memory** (identify in this process, decode "
        "excluded; each clip once untimed, then under every budget in turn; 'right' is the "
        "right song on top, "
        "for clips of unindexed tracks no match; traced MB: tracemalloc's peak during the "
        "identification; 'timed out': a lookup ran past the store's statement timeout, which the "
        "service answers with 503):",
        "",
        "| budget (postings) | clips | n | right | no answer | wrong | timed out | p50 ms "
        "| max traced MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    # Counted before uncounted, each by budget; clips of indexed tracks before unindexed.
    order = sorted(
        results,
        key=lambda k: (
            not k[0].counted,
            k[0].budget,
            k[0].triplets or 0,
            -1 if k[0].complete is None else k[0].complete,
            k[1][2] == "0",
            k[1],
        ),
    )
    for config, (condition, length, indexed) in order:
        row = results[(config, (condition, length, indexed))]
        n = len(row["ms"])
        what = f"`{condition}` {length} s" + (" of unindexed tracks" if indexed == "0" else "")
        how = config.label()
        lines.append(
            f"| {how} | {what} | {n} | {row['right']} | {row['none']} | {row['wrong']} "
            f"| {row['timeout']} | {statistics.median(row['ms']):,.0f} | {max(row['mb']):,.0f} |"
        )
    return lines


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database", required=True, help="a catalogue latency.py built")
    parser.add_argument("--format", default="fp2", choices=["fp1", "fp2"])
    parser.add_argument(
        "--budgets",
        type=_ints,
        default=[1_000_000, 4_000_000],
    )
    parser.add_argument("--clips", type=int, default=30, help="per case of indexed tracks")
    parser.add_argument(
        "--unknown-clips", type=int, default=28, help="per case of unindexed tracks"
    )
    parser.add_argument(
        "--uncounted",
        type=_ints,
        default=[],
        help="budgets also measured with what they left out not counted by the chance model",
    )
    parser.add_argument(
        "--triplet-budgets",
        type=_ints,
        default=[],
        help="max_hits_triplets values, each run under every budget",
    )
    parser.add_argument(
        "--complete-candidates",
        type=_ints,
        default=[],
        help="complete_candidates values, each run under every budget",
    )
    parser.add_argument(
        "--configs",
        type=lambda s: [tuple(int(x) for x in c.split(":")) for c in s.split(",") if c],
        default=[],
        help="budget:complete_candidates pairs measured besides the cross product",
    )
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    lines = report(asyncio.run(measure(args)), args)
    publish_catalogue_table(lines, args, "lookup_budget", SECTION)
    return 0


if __name__ == "__main__":
    sys.exit(main())

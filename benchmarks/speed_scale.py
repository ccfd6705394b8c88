"""The speed search at catalogue scale, side by side with a single dense lookup of the whole grid.

Against a catalogue latency.py grew (`--database`, e.g. `sd_curve_fp1_100000` after
`latency.py --formats fp1 --sizes 100000`), 10-s clips of the indexed corpus tracks that need
the speed grid (played 5 % slow or fast, 2 % slow, pitch-shifted by a semitone) are identified
in this process two ways, in alternating order:

- `coarse to fine`: the service as it is (service/core/identify/speed_search.py);
- `dense grid`: a single dense lookup of the grid, built here from the service's own
  parts: the first two tiers as they are, then the query-density landmarks under every speed
  in one lookup, the budget (`max_hits_per_lookup`) shared by all of them.

Per condition and way: right song, wrong song, no answer, the median chance (log10) of the
right answers, and the median and p95 seconds per clip (decode and fingerprinting excluded;
the same for both ways).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import random
import statistics
import sys
import time
from dataclasses import dataclass, field, replace

import numpy as np

from benchmarks.accuracy import corpus_dir
from benchmarks.benchmarks_md import this_command, write_section
from benchmarks.latency_clips import _title
from service.audio.analysis import AnalysedAudio, analyse_query
from service.audio.params import DEFAULT_PARAMS
from service.core.identify.identify import identify_analysed
from service.core.identify.lookups import HitCache, postings_caps
from service.match import Match, MatchParams, find_matches, inconclusive, speed_variants
from service.store.postgres import PostgresStore

SECTION = "## The speed search at 100,000 songs (`benchmarks/speed_scale.py`)"
CONDITIONS = ("speed_m5", "speed_p5", "speed_m2", "pitch_p1st")
WAYS = ("coarse to fine", "dense grid")


@dataclass
class Tally:
    right: int = 0
    wrong: int = 0
    none: int = 0
    chances: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


async def dense_grid(store: PostgresStore, audio: AnalysedAudio, mp: MatchParams) -> list[Match]:
    """Identification with a single dense lookup of the grid: tiers 1 and 2 as they are (a
    grid of the clip's own speed alone adds no lookup), then every speed's query-density
    landmarks in one lookup under the shared budget."""
    own = await identify_analysed(store, audio, replace(mp, speed_range=0.0), DEFAULT_PARAMS)
    matches = [m.match for m in own]
    if not inconclusive(matches, mp):
        return matches
    caps = await postings_caps(store, mp)
    cache = HitCache(store, mp.max_hits_per_lookup)
    params = DEFAULT_PARAMS.for_queries()
    variants = speed_variants(audio.peaks, mp.speed_grid(), params, caps.speed)
    # The clip's own speed as tier 2 looked it up (deep cap), the others under the speed cap.
    await cache.hits_for(variants[0].hashes, caps.deep)
    hits = await cache.hits_for(np.concatenate([v.hashes for v in variants]), caps.speed)
    return await asyncio.to_thread(find_matches, variants, hits, DEFAULT_PARAMS, mp)


async def run(args: argparse.Namespace) -> tuple[dict[tuple[str, str], Tally], int]:
    """Each way's tally per condition, and the catalogue's size."""
    root = corpus_dir() / "queries" / "dev"
    with (root / "queries.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["indexed"] == "1" and r["clip_len_s"] == "10"]
    with (root / "index_tracks.csv").open() as f:
        paths = {r["track_id"]: r["path"] for r in csv.DictReader(f)}
    rng = random.Random(args.seed)
    store = PostgresStore(f"{args.dsn.rstrip('/')}/{args.database}", DEFAULT_PARAMS.version)
    await store.open()
    mp = MatchParams()
    tallies = {(c, w): Tally() for c in args.conditions for w in WAYS}
    try:
        for condition in args.conditions:
            chosen = [r for r in rows if r["condition"] == condition]
            for i, r in enumerate(rng.sample(chosen, min(args.clips, len(chosen)))):
                audio = analyse_query(root / r["query_file"], DEFAULT_PARAMS)
                title = _title(paths[r["track_id"]])
                for way in WAYS if i % 2 == 0 else WAYS[::-1]:
                    started = time.perf_counter()
                    if way == WAYS[0]:
                        found = [
                            (m.song.title, m.match)
                            for m in await identify_analysed(store, audio, mp, DEFAULT_PARAMS)
                        ]
                    else:
                        matches = await dense_grid(store, audio, mp)
                        songs = await store.get_songs([m.song_id for m in matches[:1]])
                        found = [
                            (songs[m.song_id].title, m) for m in matches[:1] if m.song_id in songs
                        ]
                    tally = tallies[(condition, way)]
                    tally.seconds.append(time.perf_counter() - started)
                    if not found:
                        tally.none += 1
                    elif found[0][0] == title:
                        tally.right += 1
                        tally.chances.append(found[0][1].chance_log10)
                    else:
                        tally.wrong += 1
                print(
                    condition,
                    r["query_file"],
                    {w: tallies[(condition, w)].right for w in WAYS},
                    flush=True,
                )
        songs = (await store.list_songs(1, 0)).total
    finally:
        await store.close()
    return tallies, songs


def report(tallies: dict[tuple[str, str], Tally], songs: int) -> list[str]:
    lines = [
        f"**The speed search at {songs:,} songs, side by side** (10-s clips of indexed corpus "
        "tracks that need the speed grid, each identified both ways in alternating order, in "
        "one process; seconds exclude decoding and fingerprinting):",
        "",
        "| condition | way | clips | right | wrong | none | median chance of right answers"
        " (log10) | median s | p95 s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (condition, way), t in tallies.items():
        n = t.right + t.wrong + t.none
        chance = f"{statistics.median(t.chances):.1f}" if t.chances else "-"
        p95 = float(np.percentile(t.seconds, 95)) if t.seconds else 0.0
        lines.append(
            f"| `{condition}` | {way} | {n} | {t.right} | {t.wrong} | {t.none} | {chance} | "
            f"{statistics.median(t.seconds):.2f} | {p95:.2f} |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--database", default="sd_latency_cat")
    parser.add_argument("--conditions", type=lambda s: s.split(","), default=list(CONDITIONS))
    parser.add_argument("--clips", type=int, default=12, help="per condition")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    lines = report(*asyncio.run(run(args)))
    print("\n".join(lines))
    if args.write:
        write_section("speed-scale", SECTION, this_command("benchmarks.speed_scale"), lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

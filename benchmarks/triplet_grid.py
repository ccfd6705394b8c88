"""What the triplets' grids of time scales cost, and that their steps change no answer.

The triplet tier (index format "fp2", service/core/identify/triplet_votes.py) votes a clip's
triplet hits under a coarser grid of time scales (MatchParams.triplet_coarser_scale_step),
then under a coarse one (triplet_coarse_scale_step) on the songs the coarser one could
align, then under the fine grid on the songs the coarse one could align. A pass rules out
only songs that could not reach min_score under any scale within half its step, so the steps
trade time, never answers. This asks clips of the development query set against a catalogue
`benchmarks/latency.py` built (`--database`), fetches each clip's triplet hits twice, the
rarest first, under the triplets' first budget and, afresh, under MAX_HITS_PER_LOOKUP (the
tier's second lookup adds that budget to what the first kept, so its hits are a few more),
and votes the same hits under each pair of steps in turn (side by side, clip by clip, the
order rotated from clip to clip, with the tier's number of completed candidates kept),
checking that every pair returns the matches and candidates of the first.

    CORPUS_DIR=... python -m benchmarks.triplet_grid --database postgresql://…/sd_curve_fp2_10000
        [--steps 0.06:0.02,0.075:0.02] [--clips 6] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from dataclasses import replace

from benchmarks.benchmarks_md import publish_catalogue_table
from benchmarks.lookup_budget import clips
from service.audio.analysis import analyse_query
from service.audio.hashes import Fingerprints
from service.audio.params import FingerprintParams, params_for_format
from service.audio.peaks import thin_peaks
from service.audio.triplets import triplet_hashes
from service.core.identify.lookups import HitCache, postings_caps, triplet_budget
from service.core.identify.triplet_votes import triplet_search
from service.match import MatchParams, Search
from service.settings import Settings
from service.store import Hits
from service.store.factory import create_store

SECTION = "## The triplets' grids of time scales (`benchmarks/triplet_grid.py`)"
#: (condition, clip length s): a speed change the triplets find, heavy noise that leaves
#: them undecided, and music the catalogue lacks (both of which reach the second lookup).
CASES = (("speed_m5", "10"), ("babble_snr0", "10"), ("mp3_64k", "10"))
#: Candidates kept beside the matches, as the tier keeps them for completion.
CANDIDATES = 8

Steps = tuple[float, float]


def answer(found: Search) -> list[tuple]:
    """What a search decided: its matches and candidates, every field that is reported."""
    return [
        (m.song_id, m.score, round(m.speed, 6), round(m.song_offset_s, 6), round(m.chance_log10, 6))
        for m in (*found.matches, *found.candidates)
    ]


async def measure(args: argparse.Namespace) -> dict[Steps, dict]:
    params = params_for_format("fp2")
    assert params.triplets is not None
    mp = MatchParams()
    store = create_store(
        Settings(database_url=args.database, fingerprint_format="fp2"), params.version
    )
    await store.open()
    results: dict[Steps, dict] = {s: {"ms": [], "same": 0, "hits": []} for s in args.steps}
    try:
        caps = await postings_caps(store, mp)
        chosen = [c for c in clips(args.clips, args.clips) if c.case[:2] in CASES]
        for n, clip in enumerate(chosen):
            audio = analyse_query(clip.path, params)
            triplets = triplet_hashes(
                thin_peaks(audio.peaks, params), params.triplets, params.min_bin, query=True
            )
            if not len(triplets):
                continue
            first = triplet_budget(mp, audio.peaks.span_s(params.frame_s))
            for budget in (first, mp.max_hits_per_lookup):
                cache = HitCache(store, mp.max_hits_per_lookup)
                hits = await cache.hits_for(triplets.hashes, caps.first, budget)
                # Untimed once, so that no pair of steps pays for the first allocations.
                reference = answer(_search(triplets, hits, args.steps[0], params, mp))
                order = args.steps[n % len(args.steps) :] + args.steps[: n % len(args.steps)]
                for steps in order:
                    started = time.perf_counter()
                    found = _search(triplets, hits, steps, params, mp)
                    row = results[steps]
                    row["ms"].append((time.perf_counter() - started) * 1000.0)
                    row["same"] += answer(found) == reference
                    row["hits"].append(len(hits))
    finally:
        await store.close()
    return results


def _search(
    triplets: Fingerprints, hits: Hits, steps: Steps, params: FingerprintParams, mp: MatchParams
) -> Search:
    coarser, coarse = steps
    grids = replace(mp, triplet_coarser_scale_step=coarser, triplet_coarse_scale_step=coarse)
    return triplet_search(triplets, hits, params, grids, CANDIDATES)


def report(results: dict[Steps, dict], args: argparse.Namespace) -> list[str]:
    base = results[args.steps[0]]["ms"]
    mp = MatchParams()
    lines = [
        f"Machine: {os.uname().machine}, {os.cpu_count()} cores shared with other work, "
        "PostgreSQL on the same host. Catalogue: "
        f"`{args.database.rsplit('/', 1)[-1]}` (fingerprints {params_for_format('fp2').version}). "
        f"Measured {time.strftime('%Y-%m-%d')}.",
        "",
        "**The triplets' vote under each pair of grid steps, on the same hits** (`triplet_search`"
        " in this process; per clip, its triplet hits under the first budget "
        f"({mp.max_hits_triplets:,} postings per 10 s) and under MAX_HITS_PER_LOOKUP "
        f"({mp.max_hits_per_lookup:,}); clips: "
        + ", ".join(f"`{c}` {s} s" for c, s in CASES)
        + f", {args.clips} each; 'same answers': matches and candidates equal to the first "
        "row's, field by field; 'time against the first': the median of the per-search "
        "ratios):",
        "",
        "| coarser step | coarse step | scales voted first | searches | median hits | same answers "
        "| median ms | total ms | time against the first |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for steps in args.steps:
        row = results[steps]
        n = len(row["ms"])
        if not n:
            continue
        ratio = statistics.median(m / max(b, 1e-9) for m, b in zip(row["ms"], base, strict=True))
        scales = len(mp.triplet_coarse_scales(steps[0] if steps[0] > 0 else steps[1]))
        hits = statistics.median(row["hits"])
        lines.append(
            f"| {steps[0]:g} | {steps[1]:g} | {scales} | {n} | {hits:,.0f}"
            f" | {row['same']} of {n} | {statistics.median(row['ms']):,.0f} "
            f"| {sum(row['ms']):,.0f} | {ratio:.2f}x |"
        )
    return lines


def _steps(text: str) -> list[Steps]:
    pairs = [tuple(float(x) for x in s.split(":")) for s in text.split(",") if s]
    if any(len(p) != 2 for p in pairs):
        raise argparse.ArgumentTypeError("steps are coarser:coarse pairs")
    return [(p[0], p[1]) for p in pairs]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database", required=True, help="an fp2 catalogue latency.py built")
    parser.add_argument(
        "--steps",
        type=_steps,
        default=[(0.06, 0.02), (0.075, 0.02), (0.09, 0.02), (0.0, 0.02)],
        help="coarser:coarse step pairs, the first the reference",
    )
    parser.add_argument("--clips", type=int, default=6, help="per case")
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    lines = report(asyncio.run(measure(args)), args)
    publish_catalogue_table(lines, args, "triplet_grid", SECTION)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The speed grid: a clip that matches nothing at its own speed, searched at candidate speeds.

A clip's landmarks re-hashed under every speed of the grid are 25 times its hashes (49 with
the pitch-only twins), and at a large catalogue they meet far more postings than one lookup
may return (MatchParams.max_hits_per_lookup, rarest hashes first). Songs' landmarks sit mostly
on frequent hash values: at 100,000 songs the hashes that match a 5 %-slow clip's song have a
median of some 6,000 postings, against a catalogue mean of 530. Under a budget shared by every
speed and every one of the clip's query-density landmarks, each speed kept only hashes too
rare to hold the song, and 5 %-slow clips went unanswered (BENCHMARKS.md). So the grid is
searched coarse to fine, each step only when the one before is not conclusive:

1. The clip's index-density landmarks (the pairs a clean copy of the song was indexed with, a
   third of its hashes, so the budget reaches three times deeper) under every speed.
2. Its query-density landmarks at and beside the speeds of step 1's most improbable
   candidates (a real speed falls between two grid speeds), and at their pitch-only twins,
   with the whole budget.
3. Its query-density landmarks under every speed and pitch-only twin, the budget shared: all
   a small catalogue needs, and what is left when step 1's candidates pointed elsewhere.

A pitch-only twin (MatchParams.pitch_search) scales a speed's frequencies and leaves the times
alone, as a pitch shift does.

Every step's matches pay for the whole grid (choosing the speeds of step 2 was a search over
it), and a match at a speed other than the clip's own pays MatchParams.calibration_log10_speed
once for each of the three searches whose best match is the answer (log10 3 more). On the
development corpus that took the 10-s unindexed clips answered from 4 of 728 to 1 (the grid
searched once, densely, answered 3); the pitch-only twins, which doubled the hypotheses, brought
it to 2 while pitch-shifted 5-s clips went from 84-92 % to 98-99 % (BENCHMARKS.md). Matches at
the clip's own speed, noisy clips', pay no speed calibration.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from service.audio.params import FingerprintParams
from service.audio.peaks import Peaks, thin_peaks
from service.core.hit_cache import HitCache
from service.matching import (
    Hits,
    Match,
    MatchParams,
    QueryVariant,
    Search,
    inconclusive,
    merge_matches,
    search_matches,
    speed_variants,
)


async def search_speeds(
    cache: HitCache,
    peaks: Peaks,
    cap: int | None,
    params: FingerprintParams,
    match_params: MatchParams,
    order_hits: Callable[[Hits], Hits] | None = None,
) -> list[Match]:
    """Matches of a clip's query-density `peaks` under the speed grid, best first.

    `params` are the index's fingerprint parameters (the clip's peaks were picked under
    params.for_queries()); the speeds other than the clip's own are looked up under `cap`.
    `order_hits` as for search_speeds_batch.
    """
    return (await search_speeds_batch(cache, [peaks], cap, params, match_params, order_hits))[0]


async def search_speeds_batch(
    cache: HitCache,
    clips: Sequence[Peaks],
    cap: int | None,
    params: FingerprintParams,
    match_params: MatchParams,
    order_hits: Callable[[Hits], Hits] | None = None,
) -> list[list[Match]]:
    """search_speeds for several clips at once: each step is one lookup, under the cache's
    budget, for every clip still open, and each clip is matched against those hits alone.
    `order_hits` puts the hits in an order that does not depend on how the lookups went
    (streams need it: a window must match the same whichever lookups came before)."""
    grid = match_params.speed_grid()
    # Pitch-only twins of every speed but the clip's own, after the speeds.
    twins = grid[1:] if match_params.pitch_search else []
    hypotheses = len(grid) + len(twins)
    charged = replace(
        match_params,
        calibration_log10_speed=match_params.calibration_log10_speed + math.log10(_SEARCHES),
    )
    qparams = params.for_queries()

    def variants(of: Peaks) -> list[QueryVariant]:
        return speed_variants(of, grid, qparams, cap) + speed_variants(
            of, twins, qparams, cap, True
        )

    async def search(
        chosen: list[list[QueryVariant]], again: bool = False, candidates: int = 0
    ) -> list[Search]:
        hashes = [v.hashes for vs in chosen for v in vs]
        if not hashes:
            return [Search([], []) for _ in chosen]
        hits = await cache.hits_for(np.concatenate(hashes), cap, again=again)

        def run() -> list[Search]:
            ordered = order_hits(hits) if order_hits is not None else hits
            return [
                search_matches(vs, ordered, params, charged, hypotheses, candidates)
                if vs
                else Search([], [])
                for vs in chosen
            ]

        return await asyncio.to_thread(run)

    # Speeds only: pitch-only twins would halve each speed's share of the budget, and a
    # pitch-shifted clip still shows near its factor through its short time differences.
    coarse = await asyncio.to_thread(
        lambda: [speed_variants(thin_peaks(p, params), grid, params, cap) for p in clips]
    )
    first = await search(coarse, candidates=match_params.speed_focus)
    results = [s.matches for s in first]
    still = [i for i, m in enumerate(results) if inconclusive(m, match_params)]
    if not still:
        return results
    dense = await asyncio.to_thread(lambda: {i: variants(clips[i]) for i in still})
    # The speeds at and beside the candidates', and their twins.
    focus = {}
    for i in still:
        speeds = _around(grid, [m.grid_speed for m in first[i].candidates])
        chosen = [v for v in dense[i] if v.factor in speeds]
        if chosen:
            focus[i] = chosen
    if focus:
        found = await search(list(focus.values()), again=True)
        for i, s in zip(focus, found, strict=True):
            results[i] = merge_matches(results[i], s.matches, match_params.max_matches)
        still = [i for i in still if inconclusive(results[i], match_params)]
    if still:
        found = await search([dense[i] for i in still])
        for i, s in zip(still, found, strict=True):
            results[i] = merge_matches(results[i], s.matches, match_params.max_matches)
    return results


#: Searches of the grid whose best match is the answer (coarse, focus, dense).
_SEARCHES = 3


def _around(grid: list[float], speeds: list[float]) -> set[float]:
    """The grid speeds at and next to each of `speeds`."""
    ordered = sorted(grid)
    chosen: set[float] = set()
    for speed in speeds:
        at = ordered.index(speed)
        chosen.update(ordered[max(0, at - 1) : at + 2])
    return chosen

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
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from service.audio.params import FingerprintParams
from service.audio.peaks import Peaks, thin_peaks
from service.core.identify.lookups import HitCache, speed_grid_budget
from service.match import (
    Match,
    MatchParams,
    QueryVariant,
    Search,
    inconclusive,
    merge_matches,
    search_matches,
    speed_search_needed,
    speed_variants,
)
from service.store import Hits


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
    `order_hits` puts the hits in an order that does not depend on how the lookups went
    (a stream's window must match the same whichever lookups came before).

    One function of a little over 60 lines: its three steps (coarse, around the best speeds,
    dense) share the variants, the charged parameters and the running list of matches, and
    read best in the order they run.
    """
    grid = match_params.speed_grid()
    # Pitch-only twins of every speed but the clip's own, after the speeds.
    twins = grid[1:] if match_params.pitch_search else []
    hypotheses = len(grid) + len(twins)
    charged = replace(
        match_params,
        calibration_log10_speed=match_params.calibration_log10_speed + math.log10(_SEARCHES),
    )

    def variants(of: Peaks, fp: FingerprintParams) -> list[QueryVariant]:
        return speed_variants(of, grid, fp, cap) + speed_variants(
            of, twins, fp, cap, pitch_only=True
        )

    budget = speed_grid_budget(match_params, peaks.span_s(params.frame_s))

    async def search(
        chosen: list[QueryVariant], again: bool = False, candidates: int = 0
    ) -> Search:
        hashes = np.concatenate([v.hashes for v in chosen])
        hits = await cache.hits_for(hashes, cap, budget, again=again)

        def run() -> Search:
            ordered = order_hits(hits) if order_hits is not None else hits
            return search_matches(
                chosen, ordered, params, charged, speeds_tried=hypotheses, candidates=candidates
            )

        return await asyncio.to_thread(run)

    # Speeds only: pitch-only twins would halve each speed's share of the budget, and a
    # pitch-shifted clip still shows near its factor through its short time differences.
    coarse = await asyncio.to_thread(
        lambda: speed_variants(thin_peaks(peaks, params), grid, params, cap)
    )
    first = await search(coarse, candidates=match_params.speed_focus)
    matches = first.matches
    if not inconclusive(matches, match_params):
        return matches
    dense = await asyncio.to_thread(variants, peaks, params.for_queries())
    # The speeds at and beside the candidates', and their twins.
    speeds = _around(grid, [m.grid_speed for m in first.candidates])
    chosen = [v for v in dense if v.factor in speeds]
    if chosen:
        found = await search(chosen, again=True)
        matches = merge_matches(matches, found.matches, match_params.max_matches)
        if not inconclusive(matches, match_params):
            return matches
    found = await search(dense)
    return merge_matches(matches, found.matches, match_params.max_matches)


async def after_speed_search(
    cache: HitCache,
    matches: list[Match],
    peaks: Peaks,
    cap: int | None,
    params: FingerprintParams,
    match_params: MatchParams,
    order_hits: Callable[[Hits], Hits] | None = None,
) -> list[Match]:
    """A clip's `matches` at its own speed, or what the speed grid makes of them when they
    need it (matching.speed_search_needed): the grid's matches instead of inconclusive ones;
    beside a final but drifting one, which competes with them. With speed_range 0
    (MatchParams.speed_grid() is the clip's own speed alone) there is no grid."""
    if len(match_params.speed_grid()) <= 1 or not speed_search_needed(matches, match_params):
        return matches
    found = await search_speeds(cache, peaks, cap, params, match_params, order_hits)
    if inconclusive(matches, match_params):
        return found
    return merge_matches(matches, found, match_params.max_matches)


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

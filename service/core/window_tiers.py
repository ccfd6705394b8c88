"""Windows of a stream or of a long file, matched in identify's tiers a batch at a time.

A window is matched like a clip (catalogue.identify_analysed): its index-density landmarks
under the first tier's budget, then its denser query landmarks if that settled nothing, then
the speed grid coarse to fine (speed_search.py). Each tier is one lookup for every window of
the batch it serves, under the budget of as many clips.

At 100,000 songs the deeper tiers cost seconds and millions of postings per window, so they
take the open windows a few at a time (DEEP_GROUP): the hits a lookup holds, and with them a
process's memory, stay those of a few clips whatever the batch or the file's length. The
first tier is cheap (150,000 postings per window at most) and serves the whole batch at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from service.audio.hashes import landmark_hashes
from service.audio.params import FingerprintParams
from service.audio.peaks import Peaks, thin_peaks
from service.core.hit_cache import HitCache, PostingsCaps, first_tier_budget, hits_budget
from service.core.speed_search import search_speeds_batch
from service.matching import (
    Hits,
    Match,
    MatchParams,
    QueryVariant,
    find_matches,
    inconclusive,
    variant_of,
)
from service.store.base import Store

#: Open windows per lookup of the deeper tiers: four 10-s windows are at most 16 million
#: postings per lookup at the default budget.
DEEP_GROUP = 4


@dataclass(frozen=True)
class Window:
    """One window's query-density peaks (on the window's own frame grid, from 0)."""

    peaks: Peaks
    #: Whether the window may go past the first tier (a stream's window whose audio has not
    #: all arrived yet is matched again when it has).
    deep: bool = True


async def match_window_tiers(
    store: Store,
    windows: Sequence[Window],
    window_s: float,
    caps: PostingsCaps,
    match_params: MatchParams,
    params: FingerprintParams,
    order_hits: Callable[[Hits], Hits] | None = None,
) -> list[list[Match]]:
    """Matches of every window, best first. The first tier and each group of the deeper tiers
    fetch through a HitCache of their own, so that what a group's lookups hold is dropped with
    it. `order_hits` puts each lookup's hits in an order that does not depend on which windows
    shared it (streams need it: their log must not depend on the order the segments came
    in)."""
    qparams = params.for_queries()

    def prepare() -> tuple[list[QueryVariant], list[QueryVariant]]:
        sparse = [variant_of(landmark_hashes(thin_peaks(w.peaks, params), params)) for w in windows]
        dense = [variant_of(landmark_hashes(w.peaks, qparams)) for w in windows]
        return sparse, dense

    sparse, dense = await asyncio.to_thread(prepare)
    found: list[list[Match]] = [[] for _ in windows]

    async def tier(
        cache: HitCache,
        chosen: list[int],
        variants: list[QueryVariant],
        cap: int | None,
        budget: int,
    ) -> None:
        hashes = [variants[i].hashes for i in chosen if len(variants[i].hashes)]
        if not hashes:
            return
        hits = await cache.hits_for(np.concatenate(hashes), cap, budget)

        def run() -> None:
            ordered = order_hits(hits) if order_hits is not None else hits
            for i in chosen:
                if len(variants[i].hashes):
                    found[i] = find_matches([variants[i]], ordered, params, match_params)

        await asyncio.to_thread(run)

    def still_open(among: Sequence[int]) -> list[int]:
        return [
            i
            for i in among
            if windows[i].deep and len(dense[i].hashes) and inconclusive(found[i], match_params)
        ]

    present = [i for i, v in enumerate(dense) if len(v.hashes)]
    first = first_tier_budget(match_params, len(present) * window_s)
    await tier(HitCache(store), present, sparse, caps.first, first)
    deeper = still_open(present)
    for start in range(0, len(deeper), DEEP_GROUP):
        group = deeper[start : start + DEEP_GROUP]
        cache = HitCache(store)
        await tier(cache, group, dense, caps.deep, hits_budget(match_params, len(group) * window_s))
        # speed_range 0 (MatchParams.speed_grid() is the clip's own speed alone): no grid.
        if len(match_params.speed_grid()) > 1 and (retry := still_open(group)):
            searched = await search_speeds_batch(
                cache,
                [windows[i].peaks for i in retry],
                caps.speed,
                params,
                match_params,
                order_hits,
                seconds_each=window_s,
            )
            for i, matches in zip(retry, searched, strict=True):
                found[i] = matches
    return found

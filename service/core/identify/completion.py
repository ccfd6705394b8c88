"""Completing a budgeted search's best candidates: when a search whose lookup's budget left
hashes out is inconclusive, its most improbable candidate songs get every posting of those
hashes they hold (HitCache.complete), and those songs alone are searched again. The tiers
(tiers.py) call this for the triplets and for the landmark searches alike."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np

from service.arrays import sorted_positions, unique_values
from service.core.identify.lookups import HitCache
from service.match import MatchParams, Search, inconclusive, merge_matches
from service.store import Hits


def candidates_to_complete(hits: Hits, hashes: np.ndarray, mp: MatchParams) -> int:
    """How many candidates a search of `hashes` completes: MatchParams.complete_candidates
    when the budgets left some of those hashes out, else none."""
    return mp.complete_candidates if hits.left_out.postings_of(hashes).any() else 0


async def completed_search(
    cache: HitCache,
    hashes: np.ndarray,
    found: Search,
    completing: int,
    search: Callable[[Hits, int], Search],
    mp: MatchParams,
) -> tuple[Search, Hits | None]:
    """`found`, or when it is inconclusive, its first `completing` candidates completed
    (HitCache.complete) and searched again, with the hits that gives (None: nothing was
    completed). Only the completed songs are searched again (`search` with the songs the
    first search counted, so that the chance model counts every candidate song as the
    first search did): completion changes nothing of the other songs' votes nor of their
    chance, and voting every hit again would cost as much as the first search."""
    if not completing or not found.candidates or not inconclusive(found.matches, mp):
        return found, None
    songs = unique_values(np.array([c.song_id for c in found.candidates[:completing]], np.int64))
    completed = await cache.complete(hashes, songs)
    if completed is None:
        return found, None

    def again() -> Search:
        theirs = completed.select(sorted_positions(songs, completed.song_ids)[0])
        return _joined(found, search(theirs, found.songs), songs, mp)

    return await asyncio.to_thread(again), completed


def _joined(found: Search, again: Search, songs: np.ndarray, mp: MatchParams) -> Search:
    """`found` with the matches and candidates of `songs` replaced by those of `again` (a
    search of those songs only), each list in the order search_matches gives it."""
    done = set(songs.tolist())
    others = [m for m in found.matches if m.song_id not in done]
    candidates = [c for c in found.candidates if c.song_id not in done] + again.candidates
    candidates.sort(key=lambda c: (c.score < mp.min_score, c.chance_log10))
    return Search(
        merge_matches(others, again.matches, mp.max_matches),
        candidates[: len(found.candidates)],
        found.songs,
    )

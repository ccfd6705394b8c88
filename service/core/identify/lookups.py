"""One query's lookups, fetched in tiers: each escalation asks the store only for new hashes.

Identification escalates from the clip's index-density landmarks to its denser query landmarks
and then to its hashes under candidate speeds. Each tier's hash set largely overlaps the
previous one's, and the lookup is the part of a query that grows with the catalogue, so hashes
already fetched are never fetched again.
"""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

import numpy as np

from service.arrays import sorted_positions, unique_values
from service.match import MatchParams
from service.store import Hits, LeftOut, Store


class HitCache:
    def __init__(self, store: Store, max_hits: int | None = None) -> None:
        """Every lookup returns at most `max_hits` postings unless it asks for fewer."""
        self._store = store
        self._max_hits = max_hits
        #: Every hash asked so far (sorted), with the cap of its latest lookup and the budget
        #: that lookup left it out under (_UNCAPPED: none did, a larger budget would bring
        #: nothing new).
        self._asked = np.empty(0, dtype=np.int32)
        self._asked_cap = np.empty(0, dtype=np.int64)
        self._left_out_under = np.empty(0, dtype=np.int64)
        self._parts: list[Hits] = []
        #: Postings of left-out hashes held by the songs complete() was asked for, until a
        #: lookup fetches those hashes whole.
        self._completions: list[Hits] = []
        #: What the budgets left out, as the latest lookup of each hash found it.
        self._left_out = LeftOut.nothing()

    def sibling(self) -> HitCache:
        """An empty cache on the same store under the same budget, for lookups that share no
        hash with this one's (another kind of hash, or hashes whose budget must not count as
        spent here): what it holds is dropped with it."""
        return HitCache(self._store, self._max_hits)

    async def hits_for(
        self,
        hashes: np.ndarray,
        max_postings: int | None = None,
        max_hits: int | None = None,
        *,
        again: bool = False,
    ) -> Hits:
        """Hits of every hash asked so far, `hashes` included (extra hits are harmless: the
        matcher only pairs the hashes of the variants it is given), each hash with at most
        `max_postings` postings, the lookup returning at most `max_hits` postings (default:
        the cache's budget) of the new hashes. A hash that came back with postings has them
        all, whatever cap it was asked under. One that came back empty is asked again under a
        higher cap than its latest lookup's (it may have been over that cap), or, when that
        lookup's budget left it out (the store says which: Hits.left_out), under a larger
        budget, or under the same one with `again`: fewer hashes then share it. One that
        was under the cap and not left out is not stored: only a higher cap asks it again."""
        cap = _cap(max_postings)
        budget = _cap(self._max_hits if max_hits is None else max_hits)
        wanted = unique_values(np.asarray(hashes, dtype=np.int32))
        known, pos = sorted_positions(self._asked, wanted)
        lower = np.zeros(len(wanted), dtype=bool)
        left_out_under = self._left_out_under[pos[known]]
        lower[known] = (self._asked_cap[pos[known]] < cap) | (
            (left_out_under < _UNCAPPED) & (again | (left_out_under < budget))
        )
        if lower.any():
            # Only when a looser cap or budget asks again (a later tier): which hashes came
            # back with postings, from the hits themselves.
            found = unique_values(np.concatenate([p.hashes for p in self._parts]))
            lower &= ~sorted_positions(found.astype(np.int32), wanted)[0]
        new = wanted[~known | lower]
        if len(new):
            found = await self._store.lookup(
                new,
                None if cap == _UNCAPPED else cap,
                None if budget == _UNCAPPED else budget,
            )
            self._remember(new, cap, budget, found)
            whole = unique_values(found.hashes).astype(np.int64)
            # Only a hash fetched or left out again is settled anew: one now over a tighter
            # cap (the speed grid's) is still left out under the looser cap it was asked
            # under before, and variants of that cap still count its postings.
            settled = unique_values(np.concatenate([whole, found.left_out.hashes]))
            self._left_out = _still_left_out(self._left_out, settled, found.left_out)
            if self._completions and len(found):
                # Hashes fetched whole now: their completed postings are among them.
                self._completions = [
                    c.select(~sorted_positions(whole, c.hashes)[0]) for c in self._completions
                ]
        return self._all_hits()

    async def complete(self, hashes: np.ndarray, song_ids: np.ndarray) -> Hits | None:
        """Every hash asked so far, as hits_for returns them, plus the postings of `hashes`
        that the budgets left out and that `song_ids` hold: each of those songs is then
        scored on every posting of those hashes under their caps, as with no budget, while
        the other songs cost no more than the budget. The left-out hashes are fetched a
        budget of postings at a time, the rarest first, each part cut to those songs before
        the next, so that what a lookup holds stays under the budget. A song is completed once
        per cache (asked again, it is left as it is: its postings would count twice). None
        when there is nothing to fetch (no such hash left out, or no new song)."""
        left = self._left_out
        songs = unique_values(np.asarray(song_ids, dtype=np.int64))
        done = [s for s, _ in left.completed]
        if done:
            songs = songs[~np.isin(songs, np.concatenate(done))]
        wanted = unique_values(np.asarray(hashes, dtype=np.int64))
        mine = sorted_positions(wanted, left.hashes)[0]
        if not mine.any() or not len(songs):
            return None
        missing, postings = left.hashes[mine], left.postings[mine]
        order = np.argsort(postings, kind="stable")
        part = np.cumsum(postings[order]) // max(_cap(self._max_hits), 1)
        for chunk in np.split(order, np.flatnonzero(np.diff(part)) + 1):
            hits = await self._store.lookup(missing[chunk].astype(np.int32))
            self._completions.append(hits.select(sorted_positions(songs, hits.song_ids)[0]))
        self._left_out = replace(left, completed=(*left.completed, (songs, missing)))
        return self._all_hits()

    def drop_completions(self) -> None:
        """Forget what complete() fetched, before lookups under a tighter cap than the one the
        completed hashes were left out under: a variant's cap is judged by the rows of each
        hash among the hits, and a completed hash's rows are those of a few songs only."""
        self._completions = []
        self._left_out = replace(self._left_out, completed=())

    def _all_hits(self) -> Hits:
        parts = self._parts + self._completions
        # One part needs no copy (a clip that stops at the first tier).
        hits = parts[0] if len(parts) == 1 else Hits.concat(parts)
        return replace(hits, left_out=self._left_out)

    def _remember(self, asked: np.ndarray, cap: int, budget: int, hits: Hits) -> None:
        """Record the lookup of `asked` (sorted distinct): each hash's entry is its latest
        lookup's, whatever an earlier one found."""
        left = sorted_positions(hits.left_out.hashes.astype(np.int32), asked)[0]
        stale = sorted_positions(asked, self._asked)[0]
        hashes = np.concatenate([self._asked[~stale], asked])
        caps = np.concatenate([self._asked_cap[~stale], np.full(len(asked), cap, np.int64)])
        under = np.concatenate(
            [self._left_out_under[~stale], np.where(left, budget, _UNCAPPED).astype(np.int64)]
        )
        order = np.argsort(hashes, kind="stable")
        self._asked, self._asked_cap, self._left_out_under = (
            hashes[order],
            caps[order],
            under[order],
        )
        self._parts.append(hits)


def _still_left_out(before: LeftOut, settled: np.ndarray, now: LeftOut) -> LeftOut:
    """What the budgets have left out once a lookup fetched or left out `settled` (sorted
    distinct) and left `now` out: each of those hashes as that lookup found it, the others
    as before."""
    if not len(before) and not before.completed:
        return now
    stale = sorted_positions(settled, before.hashes)[0]
    hashes = np.concatenate([before.hashes[~stale], now.hashes])
    postings = np.concatenate([before.postings[~stale], now.postings])
    order = np.argsort(hashes, kind="stable")
    frames = now.catalogue_frames or before.catalogue_frames
    return LeftOut(hashes[order], postings[order], frames, before.completed)


def _cap(limit: int | None) -> int:
    return _UNCAPPED if limit is None else limit


#: No cap or budget, as an int that compares above every real one.
_UNCAPPED = 1 << 62


class PostingsCaps(NamedTuple):
    """MatchParams.max_postings of each kind of lookup, for one catalogue size."""

    #: The first tier (the clip's index-density landmarks at its own speed).
    first: int | None
    #: The second tier (its denser landmarks at its own speed).
    deep: int | None
    #: The speed grid's other speeds.
    speed: int | None


async def postings_caps(store: Store, match_params: MatchParams) -> PostingsCaps:
    """The caps for `store`'s catalogue as it is now, from one read of its size (none when no
    tier caps)."""
    mp = match_params
    if (
        max(mp.frequent_hash_factor, mp.frequent_hash_factor_deep, mp.frequent_hash_factor_speed)
        <= 0
    ):
        return PostingsCaps(None, None, None)
    total = await store.fingerprint_total()
    return PostingsCaps(
        mp.max_postings(total),
        mp.max_postings(total, mp.frequent_hash_factor_deep),
        mp.max_postings(total, mp.frequent_hash_factor_speed),
    )


#: The clip length MatchParams.max_hits_per_lookup is meant for.
BUDGET_CLIP_S = 10.0


def hits_budget(match_params: MatchParams, seconds: float) -> int:
    """MatchParams.max_hits_per_lookup for a lookup that serves `seconds` of audio at once (a
    long file's timeline, a batch of stream windows): the budget of a 10-s clip for each 10 s,
    so that a window of a long file keeps the hashes a clip of it would."""
    return _per_clip(match_params.max_hits_per_lookup, seconds)


def first_tier_budget(match_params: MatchParams, seconds: float) -> int:
    """MatchParams.max_hits_first_tier for a clip of `seconds`, per 10 s as hits_budget."""
    return _per_clip(match_params.max_hits_first_tier, seconds)


def triplet_budget(match_params: MatchParams, seconds: float) -> int:
    """MatchParams.max_hits_triplets for a clip of `seconds`, per 10 s as hits_budget."""
    return _per_clip(match_params.max_hits_triplets, seconds)


def speed_grid_budget(match_params: MatchParams, seconds: float) -> int:
    """MatchParams.max_hits_speed_grid for a clip of `seconds`, per 10 s as hits_budget."""
    return _per_clip(match_params.max_hits_speed_grid, seconds)


def _per_clip(budget_per_clip: int, seconds: float) -> int:
    """A budget meant for a BUDGET_CLIP_S clip, scaled to `seconds` (never below it)."""
    return int(budget_per_clip * max(1.0, seconds / BUDGET_CLIP_S))

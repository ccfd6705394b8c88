"""One query's lookups, fetched in tiers: each escalation asks the store only for new hashes.

Identification escalates from the clip's index-density landmarks to its denser query landmarks
and then to its hashes under candidate speeds. Each tier's hash set largely overlaps the
previous one's, and the lookup is the part of a query that grows with the catalogue, so hashes
already fetched are never fetched again.
"""

from __future__ import annotations

import numpy as np

from service.arrays import unique_values
from service.matching import Hits, MatchParams
from service.store.base import Store


def _contains(sorted_values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    if not len(sorted_values):
        return np.zeros(len(wanted), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_values, wanted), len(sorted_values) - 1)
    return sorted_values[pos] == wanted


class HitCache:
    def __init__(
        self,
        store: Store,
        known: tuple[np.ndarray, Hits] | None = None,
        max_postings: int | None = None,
    ) -> None:
        """`known` seeds the cache with (hashes asked, their hits) the caller already has,
        looked up under `max_postings`."""
        self._store = store
        self._cap = _UNCAPPED if max_postings is None else max_postings
        self._asked = np.empty(0, dtype=np.int32)
        self._parts: list[Hits] = []
        if known is not None:
            self._asked = unique_values(np.asarray(known[0], dtype=np.int32))
            self._parts.append(known[1])

    async def hits_for(self, hashes: np.ndarray, max_postings: int | None = None) -> Hits:
        """Hits of every hash asked so far, `hashes` included (extra hits are harmless: the
        matcher only pairs the hashes of the variants it is given), each hash with at most
        `max_postings` postings. A hash asked before under a lower cap that came back empty
        (left out as too frequent, or simply not stored) is asked again."""
        cap = _UNCAPPED if max_postings is None else max_postings
        wanted = unique_values(np.asarray(hashes, dtype=np.int32))
        fetch = ~_contains(self._asked, wanted)
        if cap > self._cap:
            found = (
                unique_values(np.concatenate([p.hashes for p in self._parts]))
                if self._parts
                else self._asked[:0]
            )
            fetch |= ~_contains(found.astype(np.int32), wanted)
            self._cap = cap
        new = wanted[fetch]
        if len(new):
            self._parts.append(await self._store.lookup(new, None if cap == _UNCAPPED else cap))
            self._asked = unique_values(np.concatenate([self._asked, new]))
        return _concat(self._parts)


#: No cap, as an int that compares above every real one.
_UNCAPPED = 1 << 62


def _concat(parts: list[Hits]) -> Hits:
    if not parts:
        return Hits.empty()
    if len(parts) == 1:
        return parts[0]
    return Hits(
        np.concatenate([p.hashes for p in parts]),
        np.concatenate([p.song_ids for p in parts]),
        np.concatenate([p.offsets for p in parts]),
        np.concatenate([p.song_frames for p in parts]),
    )


async def postings_caps(store: Store, match_params: MatchParams) -> tuple[int | None, int | None]:
    """(first tier's, later tiers') MatchParams.max_postings for `store`'s catalogue as it is
    now, from one read of its size (none when neither tier caps)."""
    if match_params.frequent_hash_factor <= 0 and match_params.frequent_hash_factor_deep <= 0:
        return None, None
    total = await store.fingerprint_total()
    return match_params.max_postings(total), match_params.max_postings(total, deep=True)

"""One query's lookups, fetched in tiers: each escalation asks the store only for new hashes.

Identification escalates from the clip's index-density landmarks to its denser query landmarks
and then to its hashes under candidate speeds. Each tier's hash set largely overlaps the
previous one's, and the lookup is the part of a query that grows with the catalogue, so hashes
already fetched are never fetched again.
"""

from __future__ import annotations

import numpy as np

from service.arrays import unique_values
from service.matching import Hits
from service.store.base import Store


class HitCache:
    def __init__(self, store: Store, known: tuple[np.ndarray, Hits] | None = None) -> None:
        """`known` seeds the cache with (hashes asked, their hits) the caller already has."""
        self._store = store
        self._asked = np.empty(0, dtype=np.int32)
        self._parts: list[Hits] = []
        if known is not None:
            self._asked = unique_values(np.asarray(known[0], dtype=np.int32))
            self._parts.append(known[1])

    async def hits_for(self, hashes: np.ndarray) -> Hits:
        """Hits of every hash asked so far, `hashes` included (extra hits are harmless: the
        matcher only pairs the hashes of the variants it is given)."""
        wanted = unique_values(np.asarray(hashes, dtype=np.int32))
        pos = np.minimum(np.searchsorted(self._asked, wanted), max(len(self._asked) - 1, 0))
        seen = self._asked[pos] == wanted if len(self._asked) else np.zeros(len(wanted), bool)
        new = wanted[~seen]
        if len(new):
            self._parts.append(await self._store.lookup(new))
            self._asked = unique_values(np.concatenate([self._asked, new]))
        return _concat(self._parts)


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

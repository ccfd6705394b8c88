"""An in-memory hash index with the Store's lookup contract, for fast parameter sweeps.

The accuracy benchmark indexes through the real store by default; this index answers the same
`lookup` with sorted numpy arrays so that dozens of parameter variants can be compared quickly.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from service.arrays import unique_values
from service.store import EnvelopeRange, EnvelopeSlice, Hits, LeftOut, Song, kept_hashes


class MemoryIndex:
    def __init__(self) -> None:
        self._parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, int]] = []
        self._built = False
        #: Band envelopes by song id, with their format.
        self.envelopes: dict[int, tuple[int, np.ndarray]] = {}

    def add(
        self,
        song_id: int,
        hashes: np.ndarray,
        offsets: np.ndarray,
        n_frames: int,
        envelope: tuple[int, np.ndarray] | None = None,
    ) -> None:
        self._parts.append((hashes, offsets, np.full(len(hashes), song_id), n_frames))
        if envelope is not None:
            self.envelopes[song_id] = envelope
        self._built = False

    def _build(self) -> None:
        hashes = np.concatenate([p[0] for p in self._parts])
        order = np.argsort(hashes, kind="stable")
        self.hashes = hashes[order]
        self.offsets = np.concatenate([p[1] for p in self._parts])[order]
        self.songs = np.concatenate([p[2] for p in self._parts])[order]
        self.frames = np.concatenate([np.full(len(p[0]), p[3]) for p in self._parts])[order]
        self.catalogue_frames = sum(int(p[3]) for p in self._parts)
        self._built = True

    def lookup(
        self, hashes: np.ndarray, max_postings: int | None = None, max_hits: int | None = None
    ) -> Hits:
        if not self._built:
            self._build()
        wanted = unique_values(hashes)
        lo = np.searchsorted(self.hashes, wanted, side="left")
        hi = np.searchsorted(self.hashes, wanted, side="right")
        stored = hi - lo
        keep = kept_hashes(wanted, stored, max_postings, max_hits)
        budgeted = ~keep & (stored > 0)
        if max_postings is not None:
            budgeted &= stored <= max_postings
        lo, hi = lo[keep], hi[keep]
        counts = hi - lo
        idx = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
        left_out = LeftOut.nothing()
        if budgeted.any():
            left_out = LeftOut(
                wanted[budgeted].astype(np.int64), stored[budgeted], self.catalogue_frames
            )
        return Hits(
            self.hashes[idx], self.songs[idx], self.offsets[idx], self.frames[idx], left_out
        )

    @property
    def size(self) -> int:
        return sum(len(p[0]) for p in self._parts)


class MemoryCatalogue:
    """The two Store methods identification needs, over a MemoryIndex."""

    def __init__(self, index: MemoryIndex, names: list[str]) -> None:
        self.index = index
        self.names = names

    async def lookup(
        self, hashes: np.ndarray, max_postings: int | None = None, max_hits: int | None = None
    ) -> Hits:
        return self.index.lookup(hashes, max_postings, max_hits)

    async def fingerprint_total(self) -> int:
        return self.index.size

    async def song_envelopes(
        self, ranges: list[EnvelopeRange], envelope_format: int
    ) -> dict[int, EnvelopeSlice]:
        found = {}
        for r in ranges:
            stored = self.index.envelopes.get(r.song_id)
            if stored is not None and stored[0] == envelope_format:
                first = max(0, r.first)
                found[r.song_id] = EnvelopeSlice(first, stored[1][first : max(first, r.last)])
        return found

    async def get_songs(self, song_ids: list[int]) -> dict[int, Song]:
        now = datetime.now(UTC)
        return {
            i: Song(i, self.names[i], None, None, None, None, 0.0, 0, "", 0, now) for i in song_ids
        }

"""Query/stored hash pairs: every (variant, query landmark, stored fingerprint) sharing a hash,
with the offset each votes for and its song, built a bounded number at a time.

The first step of voting (votes.py): the hits are sorted by hash once, each variant's hashes are
searched in them, and the pairs are handed on in chunks so that a speed search at a large
catalogue never holds all of its pairs at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from service.match.variants import QueryVariant
from service.store import Hits


@dataclass(frozen=True)
class AllowedGroups:
    """The (song, variant) groups a search may vote in; the rest are left out as if their
    songs' hashes had not been met under those variants."""

    #: Sorted song ids.
    songs: np.ndarray
    #: bool, shape (len(songs), variants): may song i vote under variant j.
    allowed: np.ndarray


def _hash_order(hashes: np.ndarray) -> np.ndarray:
    """Stable sort order of the hits by hash.

    Lookups return their hits sorted by hash, so the hits of a query are one sorted run per
    lookup tier (plus any uncompacted rows): timsort, numpy's stable sort, merges such runs in
    linear time, where packing keys for the fast unstable sort would sort from scratch."""
    if len(hashes) < 2 or bool((hashes[1:] >= hashes[:-1]).all()):
        return np.arange(len(hashes))
    return np.argsort(hashes, kind="stable")


#: Query/stored pairs built at once: a speed search's dense step at 100,000 songs pairs tens of
#: millions, and the int64 index arrays of all of them held several GB at once; voted in
#: chunks of this many, a clip's pairs and the arrays the votes derive from them stay near
#: 50 MB, whatever the catalogue. Every group the matcher reduces is one song under one
#: variant, so pairs are split between chunks by variant and, where one variant has more
#: than a chunk holds (without AllowedGroups), by song; only the pairs that could still make
#: a match are kept.
_PAIRS_PER_CHUNK = 500_000


class _Pairing:
    """Where each variant's hashes sit among the hits, sorted by hash once.

    The hits are sorted once and each variant's few thousand hashes are searched in them,
    rather than every hit being searched in every variant."""

    def __init__(
        self,
        variants: Sequence[QueryVariant],
        hits: Hits,
        over_cap: list[np.ndarray | None] | None = None,
    ) -> None:
        """`over_cap`: each variant's hashes left out as over its cap (QueryVariant.
        max_postings), as judged on other hits (all of a query's, when these are a share of
        them); default: judged on these."""
        self.order = _hash_order(hits.hashes)
        sorted_hashes = hits.hashes[self.order]
        self.lo: list[np.ndarray] = []
        self.counts: list[np.ndarray] = []
        #: Per variant, its hashes over its cap (None: it has no cap).
        self.over_cap: list[np.ndarray | None] = []
        # Variants that share one hash array (a query's triplets under every time scale:
        # variants.scale_variants) share its search too.
        searched: dict[tuple[int, int | None], tuple[np.ndarray, np.ndarray, np.ndarray | None]]
        searched = {}
        for i, v in enumerate(variants):
            key = (id(v.hashes), v.max_postings)
            if key not in searched:
                lo = np.searchsorted(sorted_hashes, v.hashes, side="left")
                counts = np.searchsorted(sorted_hashes, v.hashes, side="right") - lo
                over = None
                if v.max_postings is not None:
                    over = counts > v.max_postings if over_cap is None else over_cap[i]
                    counts[over] = 0
                searched[key] = (lo, counts, over)
            lo, counts, over = searched[key]
            self.lo.append(lo)
            self.counts.append(counts)
            self.over_cap.append(over)

    def chunks(self, limit: int) -> list[list[int]]:
        """Runs of consecutive variants with at most `limit` pairs each (one variant may
        exceed it alone)."""
        chunks: list[list[int]] = [[]]
        size = 0
        for i, counts in enumerate(self.counts):
            n = int(counts.sum())
            if chunks[-1] and size + n > limit:
                chunks.append([])
                size = 0
            chunks[-1].append(i)
            size += n
        return chunks

    def runs(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """The pairs of every variant, a run of variants of about _PAIRS_PER_CHUNK pairs at a
        time (pairs() of each of chunks()), empty runs left out."""
        for chunk in self.chunks(_PAIRS_PER_CHUNK):
            v_idx, q_idx, hit_idx = self.pairs(chunk)
            if len(hit_idx):
                yield v_idx, q_idx, hit_idx

    def pairs(self, chosen: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every (variant, query landmark, stored fingerprint) sharing a hash, as index
        arrays, for the variants `chosen`."""
        v_parts, q_parts, h_parts = [], [], []
        for v_idx in chosen:
            lo, counts = self.lo[v_idx], self.counts[v_idx]
            total = int(counts.sum())
            q_parts.append(np.repeat(np.arange(len(counts)), counts))
            starts = np.repeat(lo - np.cumsum(counts) + counts, counts)
            h_parts.append(self.order[starts + np.arange(total)])
            v_parts.append(np.full(total, v_idx, dtype=np.int64))
        if len(chosen) == 1:
            return v_parts[0], q_parts[0], h_parts[0]
        return np.concatenate(v_parts), np.concatenate(q_parts), np.concatenate(h_parts)


class PairChunk(NamedTuple):
    """A chunk of query/stored pairs sharing a hash: index arrays and what the votes need."""

    variant: np.ndarray
    #: Index of the query landmark among all the variants' (concatenated) hashes.
    q_flat: np.ndarray
    hit: np.ndarray
    #: Stored frame minus the landmark's frame under its variant (the offset voted for).
    delta: np.ndarray
    song: np.ndarray


def pair_chunks(
    variants: Sequence[QueryVariant], hits: Hits, groups: AllowedGroups | None = None
) -> Iterator[PairChunk]:
    """Every (variant, query landmark, stored fingerprint) sharing a hash, _PAIRS_PER_CHUNK
    pairs at a time or so, with the offset each votes for and its song.

    With `groups` (variants of one hash array, as variants.scale_variants makes them: the
    same pairs, each under its own time scale), only the pairs of the (song, variant) groups
    it allows, built from the pairs of the hash array once: no other pair is ever built."""
    offsets = np.concatenate([v.offsets for v in variants]).astype(np.int64)
    base = np.cumsum([0] + [len(v.hashes) for v in variants])[:-1]
    for v_idx, q_idx, hit_idx in _pair_indices(variants, hits, groups):
        q_flat = base[v_idx] + q_idx
        delta = hits.offsets[hit_idx].astype(np.int64) - offsets[q_flat]
        yield PairChunk(v_idx, q_flat, hit_idx, delta, hits.song_ids[hit_idx].astype(np.int64))


def _pair_indices(
    variants: Sequence[QueryVariant], hits: Hits, groups: AllowedGroups | None
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """pair_chunks's (variant, query landmark within its variant, hit) index arrays."""
    pairing = _Pairing(variants, hits)
    if groups is None:
        yield from _by_variant(pairing, variants, hits)
        return
    if len(groups.songs) == 0 or not len(variants):
        return
    _, q_all, hit_all = pairing.pairs([0])
    song = hits.song_ids[hit_all]
    row = np.minimum(np.searchsorted(groups.songs, song), len(groups.songs) - 1)
    inside = groups.songs[row] == song
    q_all, hit_all, row = q_all[inside], hit_all[inside], row[inside]
    # The variants that allow the same songs share one selection of the pairs.
    columns, part_of = np.unique(groups.allowed.T, axis=0, return_inverse=True)
    for k, column in enumerate(columns):
        chosen = np.flatnonzero(part_of.ravel() == k)
        selected = column[row]
        q_idx, hit_idx = q_all[selected], hit_all[selected]
        if not len(hit_idx):
            continue
        per_chunk = max(1, _PAIRS_PER_CHUNK // len(hit_idx))
        for first in range(0, len(chosen), per_chunk):
            part = chosen[first : first + per_chunk]
            n = len(part)
            yield np.repeat(part, len(hit_idx)), np.tile(q_idx, n), np.tile(hit_idx, n)


def _by_variant(
    pairing: _Pairing, variants: Sequence[QueryVariant], hits: Hits
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """_pair_indices without groups: runs of whole variants, and the hits split between as
    many shares of the songs as the widest variant's pairs fill chunks (a song's pairs all
    in one share, so that each (song, variant) group is voted on whole)."""
    widest = max((int(c.sum()) for c in pairing.counts), default=0)
    shares = -(-widest // _PAIRS_PER_CHUNK)
    if shares <= 1:
        yield from pairing.runs()
        return
    share = hits.song_ids % shares
    for k in range(shares):
        chosen = np.flatnonzero(share == k)
        # A hash over a variant's cap is so over all the hits, not over a share's.
        part = _Pairing(variants, hits.select(chosen), pairing.over_cap)
        for v_idx, q_idx, hit_idx in part.runs():
            yield v_idx, q_idx, chosen[hit_idx]

"""Query/stored hash pairs (pairs.py) -> votes per (song, variant, offset), reduced to
independent evidence, and each group's best offset bin. This is the matcher's hot loop."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.arrays import (
    bits,
    narrowest,
    pack_columns,
    run_starts,
    sort_with_order,
    stable_order,
    unique_values,
)
from service.match.pairs import AllowedGroups, PairChunk, pair_chunks
from service.match.variants import QueryVariant
from service.store import Hits

#: Offset bins a score counts: a bin and its two neighbours (best_offsets).
_WINDOW_BINS = 3


def best_offsets(
    groups: np.ndarray, delta: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Best offset bin of each group (a song, or a song under one hypothesis).

    Returns (group_ids, best_delta, best_score, total_votes) with one row per distinct group.
    The score of an offset bin is its votes plus its two neighbours'.
    """
    if not len(groups):
        e = np.empty(0, dtype=np.int64)
        return e, e, e, e
    # One key per vote, (group, offset) packed as narrow as these votes allow: a group's
    # offsets span less than 2^delta_bits - 1, so the bin after a group's last is never
    # taken for the next group's first.
    groups = groups.astype(np.int64, copy=False)
    g_min, d_min = int(groups.min()), int(delta.min())
    delta_bits = bits(int(delta.max()) - d_min + 1)
    if bits(int(groups.max()) - g_min) + delta_bits > 62:
        raise ValueError("groups and offsets too far apart to pack into one key")
    key = narrowest((groups - g_min) << delta_bits | (delta - d_min))
    uniq, counts = np.unique(key, return_counts=True)
    uniq = uniq.astype(np.int64)
    # uniq is sorted: the bins either side of one, when they exist, are its neighbours.
    adjacent = uniq[1:] == uniq[:-1] + 1
    window = counts.copy()
    window[:-1] += np.where(adjacent, counts[1:], 0)
    window[1:] += np.where(adjacent, counts[:-1], 0)
    uniq_group = (uniq >> delta_bits) + g_min
    first = run_starts(uniq_group)
    group_ids = uniq_group[first]
    totals = np.add.reduceat(counts, first)
    # Per group, the bin with the highest windowed score (ties: most votes of its own, then
    # the earliest offset), as one sort of a packed key rather than a three-column lexsort.
    group_index = np.repeat(np.arange(len(first)), np.diff(np.append(first, len(uniq))))
    rank = pack_columns(group_index, window.max() - window, counts.max() - counts)
    order = stable_order(rank) if rank is not None else np.lexsort((-counts, -window, uniq_group))
    best = order[first]  # groups keep their places and sizes in the sorted order
    best_delta = (uniq[best] & ((1 << delta_bits) - 1)) + d_min
    return group_ids, best_delta, window[best], totals


@dataclass(frozen=True)
class Votes:
    """Query/stored hash pairs, one row per distinct (song, variant, offset, query frame)."""

    songs: np.ndarray
    variant: np.ndarray
    db_frame: np.ndarray
    q_frame: np.ndarray  # in song units under the variant's speed
    q_recorded: np.ndarray  # as recorded in the query
    song_frames: np.ndarray  # length of the vote's song
    #: Distinct songs among all the pairs, before unpromising ones were dropped.
    n_songs: int = 0
    #: Whether each vote's (song, variant) group was promising for a match, not only for a
    #: candidate (collect_votes's `match_votes`); None: all were.
    strong: np.ndarray | None = None
    #: Songs some of whose groups were promising for a match yet were left out, because
    #: they could not be a candidate on their own offsets (collect_votes's `narrow`); None:
    #: none were left out that way.
    shadowed: np.ndarray | None = None

    def select(self, mask: np.ndarray) -> Votes:
        return Votes(
            self.songs[mask],
            self.variant[mask],
            self.db_frame[mask],
            self.q_frame[mask],
            self.q_recorded[mask],
            self.song_frames[mask],
            self.n_songs,
            None if self.strong is None else self.strong[mask],
            self.shadowed,
        )


def _first_of_runs(*columns: np.ndarray) -> np.ndarray:
    """Indices of the first occurrence of each distinct row of `columns`, in row-sorted order.

    Columns whose value ranges fit in 63 bits together are packed into one int64 key: one
    sort of a flat array instead of np.unique(axis=0)'s row sort, which costs ten times more.
    """
    key = pack_columns(*columns)
    if key is not None:
        ordered, order = sort_with_order(key)
        return order[run_starts(ordered)]
    order = np.lexsort(columns[::-1])
    stacked = np.stack([c[order] for c in columns])
    first = np.ones(len(order), dtype=bool)
    first[1:] = (stacked[:, 1:] != stacked[:, :-1]).any(axis=0)
    return order[first]


@dataclass(frozen=True)
class _Grid:
    """What every chunk of one search's pairs shares: its variants, and an offset no pair
    votes below, from which offset buckets count (the same for every chunk, so that whether
    a group could reach a floor never depends on which other pairs share its chunk)."""

    n_var: int
    origin: int

    @classmethod
    def of(cls, variants: Sequence[QueryVariant], hits: Hits) -> _Grid:
        top = max((int(v.offsets.max()) for v in variants if len(v.offsets)), default=0)
        return cls(len(variants), int(hits.offsets.min()) - top)


def _promising(p: PairChunk, width: int, min_votes: int, grid: _Grid) -> np.ndarray:
    """Mask of the pairs whose (song, variant) group could still reach `min_votes` aligned
    votes within a band of offsets `width` wide.

    Votes only ever drop out later (duplicates) or line up within such a band (the +-1 bin
    window of best_offsets, widened by as far as a residual time scale drifts them along the
    query), and any such band lies within two adjacent buckets of that width. A group none
    of whose bucket pairs holds `min_votes` pairs can therefore never be reported, and at a
    large catalogue that is nearly every song a query touches: dropping them before the
    exact reductions leaves a small fraction of the pairs to sort. A song with fewer than
    `min_votes` pairs in all is dropped first by a count over song ids, which costs no sort
    at all.
    """
    song, variant, delta, n_var = p.song, p.variant, p.delta, grid.n_var
    per_song = np.bincount(song) if int(song.max()) < 16 * len(song) + 4096 else None
    if per_song is None:
        candidates = np.arange(len(song))
    else:
        candidates = np.flatnonzero(per_song[song] >= min_votes)
    keep = np.zeros(len(song), dtype=bool)
    if len(candidates) == 0:
        return keep
    d = delta[candidates]
    bucket = (d - grid.origin) // width
    bucket_bits = bits(int(bucket.max()) + 1)
    group = song[candidates] * n_var + variant[candidates]
    ordered = np.sort(narrowest(group << bucket_bits | bucket))
    starts = run_starts(ordered)
    uniq = ordered[starts].astype(np.int64)
    counts = np.diff(np.append(starts, len(ordered)))
    # uniq is sorted, so the next bucket of the same group, if present, is the next entry.
    pair = counts.copy()
    pair[:-1] += np.where(uniq[1:] == uniq[:-1] + 1, counts[1:], 0)
    groups = uniq >> bucket_bits
    group_starts = run_starts(groups)
    group_good = np.maximum.reduceat(pair >= min_votes, group_starts)
    good_groups = groups[group_starts][group_good]
    if per_song is not None:
        # A table over every (song, variant) is small here: look each pair's group up in it
        # rather than scattering through the sort order (random writes over millions).
        table = np.zeros(len(per_song) * n_var, dtype=bool)
        table[good_groups] = True
        keep[candidates] = table[group]
        return keep
    keep[candidates] = np.isin(group, good_groups)
    return keep


def aligning_groups(
    variants: Sequence[QueryVariant], hits: Hits, drift_frames: int, min_votes: int
) -> tuple[AllowedGroups, int]:
    """The (song, variant) groups whose pairs could line up `min_votes` of them within a band
    of offsets `drift_frames` (plus the +-1 bin window) wide, and the number of distinct songs
    among all the pairs.

    The same bound as collect_votes's first step (_promising), on its own: a cheap pass over
    a coarse grid of hypotheses whose band is wide enough to hold every alignment a finer
    grid could find near one of them tells which songs, under which hypotheses, the finer
    grid needs to vote on at all."""
    n_var = len(variants)
    none = AllowedGroups(np.empty(0, dtype=np.int64), np.zeros((0, n_var), dtype=bool))
    if len(hits) == 0 or not any(len(v.hashes) for v in variants):
        return none, 0
    seen = np.zeros(int(hits.song_ids.max()) + 1, dtype=bool)
    grid = _Grid.of(variants, hits)
    found: list[np.ndarray] = []
    for p in pair_chunks(variants, hits):
        seen[p.song] = True
        keep = _promising(p, max(drift_frames, 1) + _WINDOW_BINS, min_votes, grid)
        found.append(unique_values(p.song[keep] * n_var + p.variant[keep]))
    if not found:
        return none, int(np.count_nonzero(seen))
    groups = unique_values(np.concatenate(found))
    songs = unique_values(groups // n_var)
    allowed = np.zeros((len(songs), n_var), dtype=bool)
    allowed[np.searchsorted(songs, groups // n_var), groups % n_var] = True
    return AllowedGroups(songs, allowed), int(np.count_nonzero(seen))


#: Pairs of promising groups a search keeping weak candidates sets aside before it narrows
#: (collect_votes's `narrow`): below this the votes are exactly those of every group, at no
#: cost of narrowing.
_NARROW_FROM_PAIRS = 250_000


class _Narrowing:
    """collect_votes's `narrow`: the pairs of groups that are promising for a match but could
    not be a candidate on their own offsets are kept, chunk by chunk, until more than
    _NARROW_FROM_PAIRS of them have been; from then on they are left out, those kept so far
    dropped too, and their songs listed. Each kept chunk carries, last, whether each pair's
    group could be a candidate on its own offsets."""

    def __init__(self) -> None:
        self.set_aside = 0
        self.narrowed = False
        self.shadowed: list[np.ndarray] = []

    def keep(
        self,
        kept: list[tuple[np.ndarray, ...]],
        song: np.ndarray,
        strong: np.ndarray,
        weak: np.ndarray,
    ) -> np.ndarray:
        only_strong = strong & ~weak
        self.shadowed.append(unique_values(song[only_strong]))
        if not self.narrowed:
            self.set_aside += int(np.count_nonzero(only_strong))
            if self.set_aside <= _NARROW_FROM_PAIRS:
                return strong | weak
            self.narrowed = True
            kept[:] = [tuple(a[chunk[-1]] for a in chunk) for chunk in kept]
        return weak

    def left_out(self) -> np.ndarray | None:
        """The songs whose promising groups were left out; None when none were."""
        if not self.narrowed or not self.shadowed:
            return None
        return unique_values(np.concatenate(self.shadowed))


def collect_votes(
    variants: Sequence[QueryVariant],
    hits: Hits,
    min_votes: int = 1,
    drift_frames: int = 0,
    match_votes: int | None = None,
    groups: AllowedGroups | None = None,
    narrow: bool = False,
) -> Votes:
    """Query/stored hash pairs, reduced to independent evidence.

    Votes that are not independent evidence count once per (song, variant, offset):
    - pairs whose anchors share a query frame: the peaks of one instant (a chord, the
      harmonics of one note, a drum hit's burst) are one sound event, and music that shares
      recorded material with a song (the same instrument samples or loops in another tune)
      aligns with it through whole events, several peaks and pairs at a time. Counted per
      anchor peak, a few such shared notes reached the scores of genuine noisy matches (6.7 %
      of 10-s clips of unindexed tracks answered, on the development corpus); counted per
      instant they fall back among chance (0.5 %);
    - repeats of one hash value (a sustained tone yields the same hash frame after frame, and
      two drones line up at many offsets by chance).
    Both reductions sort one packed int64 key per pair: sorting rows of a table (np.unique
    with axis=0) costs an order of magnitude more, and this is the matcher's hot loop. Groups
    that cannot reach `min_votes` votes within `drift_frames` of offset are dropped first.
    With `match_votes` above `min_votes` (weaker candidates kept beside the matches), each
    vote also says whether its group could reach `match_votes` (Votes.strong), judged on the
    same pairs as if `match_votes` had been the floor: the matches do not change. With
    `narrow` too, once the pairs of groups that could not reach `min_votes` within one bin
    and its neighbours outnumber _NARROW_FROM_PAIRS, only the groups that could are kept,
    and the songs of the promising groups left out are listed (Votes.shadowed, _Narrowing):
    at a large catalogue nearly every song a clip's dense hashes meet could drift into
    `match_votes`, but only the few that search._refine re-votes for a time scale ever do
    (search._narrowed_alike says when that leaves the answer as it was). With
    `groups`, only the pairs of the groups it allows vote at all.

    The matcher's hot loop, kept in one piece: its arrays (several million rows at a large
    catalogue) are narrowed step by step, and pieces would have to hand them all on.
    """
    empty = np.empty(0, dtype=np.int64)
    # The floor a match's group must pass, when it is above the candidates' (else None).
    split = match_votes if match_votes is not None and match_votes > min_votes else None
    if len(hits) == 0 or not any(len(v.hashes) for v in variants):
        return Votes(empty, empty, empty, empty, empty, empty)
    # Distinct songs among all pairs (the chance model's count of candidates), over chunks.
    seen = np.zeros(int(hits.song_ids.max()) + 1, dtype=bool)
    grid = _Grid.of(variants, hits)
    kept: list[tuple[np.ndarray, ...]] = []
    width = max(drift_frames, 1) + _WINDOW_BINS
    narrowing = _Narrowing() if narrow and split is not None else None
    query = _QueryColumns(variants)
    for p in pair_chunks(variants, hits, groups):
        if split is None:
            keep = _promising(p, width, min_votes, grid)
            flags: tuple[np.ndarray, ...] = ()
        else:
            strong = _promising(p, width, split, grid)
            # A group that cannot make a match is never refined for a time scale
            # (search._refine): as a weak candidate it scores what one bin and its two
            # neighbours hold, so only that narrow band bounds it, not the drift's.
            weak = _promising(p, _WINDOW_BINS, min_votes, grid)
            flags = (strong,)
            if narrowing is not None:
                keep = narrowing.keep(kept, p.song, strong, weak)
                flags += (weak,)
            else:
                keep = strong | weak
        seen[p.song] = True
        # Every group's pairs are in one chunk (pairs.py), so each chunk's votes are reduced
        # on their own: the reductions' arrays are a chunk's, never the whole query's.
        keep = np.flatnonzero(keep)
        keep = keep[query.independent(p.variant[keep], p.q_flat[keep], p.delta[keep], p.song[keep])]
        kept.append(tuple(a[keep] for a in (p.variant, p.hit, p.q_flat, p.song, *flags)))
    n_songs = int(np.count_nonzero(seen))
    left_out = None
    if narrowing is not None:
        left_out = narrowing.left_out()
        kept = [chunk[:-1] for chunk in kept]
    if not kept:
        return Votes(empty, empty, empty, empty, empty, empty)
    v_idx, hit_idx, q_flat, song, *strong = (
        kept[0] if len(kept) == 1 else tuple(np.concatenate(c) for c in zip(*kept, strict=True))
    )
    if len(hit_idx) == 0:
        return Votes(empty, empty, empty, empty, empty, empty, n_songs, None, left_out)
    return Votes(
        song,
        v_idx,
        hits.offsets[hit_idx].astype(np.int64),
        query.offsets[q_flat],
        query.recorded[q_flat],
        hits.song_frames[hit_idx].astype(np.int64),
        n_songs,
        strong[0] if split is not None else None,
        left_out,
    )


class _QueryColumns:
    """The variants' landmarks, concatenated as the pairs' `q_flat` indexes them."""

    def __init__(self, variants: Sequence[QueryVariant]) -> None:
        self.offsets = np.concatenate([v.offsets for v in variants]).astype(np.int64)
        self.recorded = np.concatenate([v.query_frames for v in variants]).astype(np.int64)
        self.hashes = np.concatenate([v.hashes for v in variants]).astype(np.int64)
        self.n_var = len(variants)

    def independent(
        self, variant: np.ndarray, q_flat: np.ndarray, delta: np.ndarray, song: np.ndarray
    ) -> np.ndarray:
        """Indices of the pairs that are independent evidence (collect_votes): the first of
        each (song, variant, offset, query frame), then of each (song, variant, offset,
        hash), in the pairs' order."""
        if not len(song):
            return np.empty(0, dtype=np.int64)
        # Songs numbered 0..n-1 among these pairs, so that the keys below pack into 63 bits.
        group = np.searchsorted(unique_values(song), song).astype(np.int64) * self.n_var
        group += variant
        q_frame = self.offsets[q_flat]
        # Every column non-negative and as narrow as these pairs allow, so the keys pack.
        shifted = delta - delta.min()
        keep = _first_of_runs(group, shifted, q_frame - q_frame.min())
        return keep[_first_of_runs(group[keep], shifted[keep], self.hashes[q_flat[keep]])]

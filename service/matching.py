"""Hits -> scored, aligned matches, tolerant of speed and pitch changes.

Each stored fingerprint that shares a hash with the query votes for (song, db_time - query_time).
A true match piles its votes into one offset bin; chance hits spread over all the offsets a song
could take. The score is the number of distinct query frames (instants) whose landmarks line up
at a song's best offset (+-1 frame, so a query whose frame grid falls between two of the song's
still counts fully), and the confidence says how unlikely that count is by chance *for that
song and that query*: the expected chance count per bin is the song's hits divided by the number
of offsets it could align at, which grows with the query's length and the song's, so one
threshold serves 3-s and 60-s queries alike.

Speed changes (a radio edit playing 2-5 % fast raises pitch and tempo together) move every
landmark: frequencies scale by the speed and times by its inverse, so plain (f1, df, dt) hashes
stop matching. The query's peaks are therefore mapped back to song coordinates under a grid of
candidate speeds (`speed_variants`) before hashing; each variant is looked up like a query of its
own. A residual time scale (tempo changed without pitch, or pitch without tempo) makes the
offsets drift along the query instead of piling into one bin; `refine_time_scale` searches that
drift for the best candidates. Every extra hypothesis tested is paid for in the chance model, so
the search does not buy false positives.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import numpy as np
from scipy.stats import poisson

from service.arrays import (
    bits,
    pack_columns,
    run_starts,
    sort_with_order,
    stable_order,
    unique_values,
)
from service.audio.hashes import (
    HASH_SPACE,
    Fingerprints,
    pack_hashes,
    pair_peaks,
)
from service.audio.params import FingerprintParams
from service.audio.peaks import Peaks
from service.envelope_check import EnvelopeCheckParams
from service.store.records import Hits


@dataclass(frozen=True)
class MatchParams:
    #: Minimum confidence (1 - chance probability over the whole catalogue) to report a match.
    min_confidence: float = 0.99
    #: Aligned query frames below which nothing is reported whatever the statistics say: a
    #: handful of coincident hashes can look improbable under the independence model yet happen in
    #: music that repeats itself.
    min_score: int = 5
    #: The same floor for the candidates a search returns beside its matches, which the band
    #: envelopes are asked about when nothing beats chance (envelope_confirm.py). Under
    #: babble at 0 dB a 5-s clip's song can keep only four aligned frames in every hop phase
    #: yet stand 5-11 standard deviations out in its envelopes at their offset; such weak
    #: candidates pay EnvelopeCheckParams.calibration_log10_weak. Measured on the development
    #: corpus (BENCHMARKS.md): 4 against 5 answered 3 more of the 246 5-s babble clips, and
    #: the same 3 of 2,184 unindexed clips; 3 (uncharged, as 4 was first tried) answered one
    #: clip fewer than 4 (chance candidates crowd the true one out of the few checked).
    candidate_min_score: int = 4
    #: Chance hits in music cluster more than independent draws would (repeated bars, shared
    #: instruments, drones). Measured on the development corpus's unindexed clips (votes
    #: counted per query frame), chance alignments reach about 10^2.25 times the probability
    #: the independence model gives them: the lowest calibration at which the quick benchmark
    #: answered at most one of its 210 10-s unindexed clips while white noise at 0 dB stayed
    #: above 97 % (BENCHMARKS.md). The model's probability is multiplied by
    #: 10^calibration_log10. Rescale it, rather than the confidence threshold, when
    #: re-calibrating on other music.
    calibration_log10: float = 2.25
    #: Added to calibration_log10 for a match found at a speed of the speed grid other than the
    #: clip's own. Every remaining false positive of the full benchmark came from the grid (4 of
    #: 728 10-s unindexed clips at 2.25 alone): chance alignments of a clip re-hashed at
    #: another speed reach improbable scores more often than the model says, beyond the
    #: Bonferroni factor the grid already pays. At 1.0 the full benchmark answered 3 of 728 10-s
    #: and none of 728 5-s unindexed clips (4 and 2 before); 5-s clips pitch-shifted by a
    #: semitone lost 2 points (85.8 -> 84.1 % down, 94.7 -> 92.7 % up), and every other speed,
    #: tempo and pitch cell at 5 and 10 s kept its score, within one clip.
    calibration_log10_speed: float = 1.0
    #: Added to calibration_log10 for a match found by an analysis of the clip started at
    #: another hop phase than its own (FingerprintParams.query_hop_phases), besides the
    #: Bonferroni factor of the phases tried: each is a fresh draw of chance alignments too.
    calibration_log10_phase: float = 1.0
    #: Expected chance votes per offset bin are multiplied by this (1: the plain model).
    dispersion: float = 1.0
    #: Aligned hashes separated from the rest by more than this (s) are left out of the span a
    #: match reports (query_start_s..query_end_s): one chance-aligned hash seconds before a song
    #: starts in a stream or a mix would otherwise move the reported start by as much.
    span_gap_s: float = 3.0
    #: Most matches returned, best first.
    max_matches: int = 5
    #: Hashes stored more than this many times the catalogue's mean per hash value are not
    #: looked up in the first tier. Hash frequencies are very uneven (sustained bass notes,
    #: drones, common intervals): on the development corpus the 44 % of a clip's hashes above
    #: this line bring 93 % of its hits, nearly all of them chance votes, and lookup and
    #: voting cost grow with the hits; the rest still decide a clean clip. A clip the first
    #: tier leaves inconclusive is looked up again under frequent_hash_factor_deep (400x: 1 %
    #: of its hashes, 19 % of its hits left out). 0 looks up everything.
    frequent_hash_factor: float = 10.0
    #: The same for the lookups of clips the first tier leaves inconclusive (denser landmarks,
    #: speed grid): noise (babble above all) leaves a clip with few of its song's landmarks,
    #: often low, frequent ones, so these look further down the frequency list.
    frequent_hash_factor_deep: float = 400.0
    #: The same for the speed grid's hashes (every candidate speed but the clip's own, whose
    #: hashes the second tier already looked up under the deep cap). The grid multiplies a
    #: clip's hashes by its 24 speeds, and a clip of nothing in the catalogue (talk, an
    #: advert, an unindexed song: most windows of a monitored stream) always reaches it, so
    #: under the deep cap its lookup and voting were most of the cost of every such query.
    #: Measured on the quick benchmark (caps at true multiples of the mean): 10x lost pitch
    #: shifts (+1 semitone, 10 s: 96.7 -> 81.3 %); 50x keeps them (95.9 %), with the same
    #: false positives as 400x (0.5 % of 10-s unindexed clips).
    frequent_hash_factor_speed: float = 50.0
    #: The cap never falls below this many postings (a small catalogue's mean is below one).
    frequent_hash_min: int = 20
    #: Most postings one lookup returns: past this, the most frequent of the hashes under the
    #: cap are left out too, the rarest kept first. The caps are multiples of the catalogue's
    #: mean, so without a budget a clip's hits grow with the catalogue without bound: at
    #: 100,000 songs one speed-grid identification held 15 GB and the kernel killed the
    #: service. Hits and the voting's arrays take some 100-200 bytes each, so this keeps a
    #: request under about 1 GB. At 10,000 songs a 10-s clip's first tier meets ~96,000
    #: hits and a speed-grid clip 4.5 million over all its tiers.
    max_hits_per_lookup: int = 4_000_000
    #: The budget of the first tier's lookup, per 10 s of clip. The caps are multiples of the
    #: catalogue's mean, so a clip's first-tier hits grow with the catalogue: ~96,000 at
    #: 10,000 songs and ~960,000 at 100,000, where looking them up and voting on them took
    #: 170 ms of a 291-ms p50 (BENCHMARKS.md). Under this budget the first tier keeps the
    #: clip's rarest hashes, which decide a clean clip at any size; a clip they leave
    #: inconclusive goes on to the second tier, which asks the hashes left out again under
    #: the deep cap and the full budget. So the budget trades only latency, never answers.
    max_hits_first_tier: int = 150_000
    #: Candidate speeds searched when the clip does not match at its own speed: from
    #: 1 - speed_range to 1 + speed_range in steps of speed_step. A hash survives a residual
    #: speed error of about a quarter of a percent, so the step is half a percent.
    speed_range: float = 0.06
    speed_step: float = 0.005
    #: When the grid's coarse search (index-density landmarks at every speed, one budget
    #: shared by all) leaves the clip inconclusive, its query-density landmarks at and beside
    #: the grid speeds of this many most improbable candidates are looked up with the whole
    #: budget to themselves (service/core/speed_search.py; 0: no such step). At 100,000
    #: songs a shared budget reaches only a clip's rarest hashes at each speed.
    speed_focus: int = 2
    #: Also search pitch-only variants of every grid speed (frequencies scaled, times not): a
    #: speed variant of a pitch-shifted clip gets its time differences wrong by as much, so
    #: only its short ones still match, and at 100,000 songs that was too few.
    pitch_search: bool = True
    #: Residual time scales searched (tempo without pitch change and vice versa), +- this.
    time_scale_range: float = 0.07
    #: Candidate songs whose alignment is refined for a residual time scale.
    refine_top: int = 8
    #: A match at the clip's own speed this improbable by chance (log10) is final; anything
    #: weaker is compared with the best match across the speed grid.
    accept_without_speed_search_log10: float = -10.0
    #: The same for a match that drifts along the clip by more than a step of the speed grid
    #: (a residual time scale at the clip's own speed): the clip may play at another speed,
    #: under which the right song scores far higher. On the development corpus a song built
    #: from the same samples as a 2 %-slow clip's aligned with it at 10^-10.3, drifting
    #: 1.3 %; clips stretched 5 % without a pitch change (the drift is their song's) reached
    #: 10^-20 in 98 % of 10-s, 85 % of 5-s and 46 % of 3-s cases, and skip the grid.
    accept_drifting_without_speed_search_log10: float = -20.0
    #: How a clip no tier could decide is confirmed from band envelopes (None: it is not).
    envelope_check: EnvelopeCheckParams | None = field(default_factory=EnvelopeCheckParams)

    def max_postings(self, total_fingerprints: int, factor: float | None = None) -> int | None:
        """The most postings a hash may have and still be looked up, in a catalogue of
        `total_fingerprints` (None: no cap), at `factor` times the mean (default: the first
        tier's, frequent_hash_factor)."""
        if factor is None:
            factor = self.frequent_hash_factor
        if factor <= 0:
            return None
        mean = total_fingerprints / HASH_SPACE
        return max(self.frequent_hash_min, math.ceil(factor * mean))

    def speed_grid(self) -> list[float]:
        """Every candidate speed, 1.0 first."""
        steps = round(self.speed_range / self.speed_step)
        grid = [1.0 + k * self.speed_step for k in range(-steps, steps + 1) if k != 0]
        return [1.0, *sorted(grid, key=lambda f: abs(f - 1.0))]


@dataclass(frozen=True)
class Match:
    song_id: int
    score: int
    confidence: float
    #: Song time (s) at which the query's first sample sits; negative if the query begins
    #: before the song does.
    song_offset_s: float
    #: Span of the query (s) covered by the aligned hashes.
    query_start_s: float
    query_end_s: float
    #: Playback speed of the query relative to the song (time scale: 1.03 plays 3 % fast).
    speed: float = 1.0
    #: log10 of the chance probability behind `confidence` (which saturates at 1.0).
    chance_log10: float = 0.0
    #: The factor of the speed-grid variant the match was found under (`speed` is the clip's
    #: playback speed: with the residual scale, and 1.0 for a pitch-only variant's).
    grid_speed: float = 1.0
    #: What decided the match: "landmarks" (the aligned hashes beat chance) or "envelope"
    #: (the hashes found the song and offset, its band envelopes confirmed them; the
    #: confidence is then the envelope check's, service/envelope_check.py).
    evidence: Literal["landmarks", "envelope"] = "landmarks"


@dataclass(frozen=True)
class QueryVariant:
    """The query's landmarks mapped to song coordinates under one assumed speed."""

    #: Assumed speed: query frequencies are song frequencies x factor, query times / factor.
    factor: float
    hashes: np.ndarray  # int32
    #: Anchor frame in song units (query frame x factor, rounded).
    offsets: np.ndarray
    #: Anchor frame in the query as recorded, for reporting the matched span.
    query_frames: np.ndarray
    #: Hashes with more stored postings than this are left out of this variant's votes, as if
    #: the lookup had left them out: the hits given to the matcher may hold them anyway, for
    #: another variant looked up under a looser cap, and the matches must not depend on which
    #: other variants or windows happened to be looked up together.
    max_postings: int | None = None
    #: Frequencies only: a pitch shift scales the clip's frequencies by `factor` and leaves
    #: its times alone (offsets and time differences are the clip's own).
    pitch_only: bool = False
    #: Seconds into the clip at which the analysis the hashes come from starts (a later hop
    #: phase: FingerprintParams.query_hop_phases); its frames count from there.
    start_s: float = 0.0

    @property
    def time_scale(self) -> float:
        """How much faster than the song the clip plays under this variant."""
        return 1.0 if self.pitch_only else self.factor


def speed_variants(
    peaks: Peaks,
    factors: Sequence[float],
    params: FingerprintParams,
    max_postings: int | None = None,
    pitch_only: bool = False,
) -> list[QueryVariant]:
    """Hashes of the query re-computed as if played at each speed in `factors` (with
    `pitch_only`, as if only its frequencies were scaled); every speed but 1.0 leaves out
    hashes with more than `max_postings` postings."""
    variants = []
    for factor in factors:
        if factor == 1.0:
            bins, frames = peaks.bins, peaks.frames
        else:
            bins = np.round(peaks.bins / factor).astype(np.int32)
            frames = (
                peaks.frames if pitch_only else np.round(peaks.frames * factor).astype(np.int32)
            )
        inside = (bins >= params.min_bin) & (bins <= params.max_bin)
        order = np.lexsort((bins[inside], frames[inside]))
        moved = Peaks(
            frames[inside][order], bins[inside][order], peaks.prominence_db[inside][order]
        )
        recorded = peaks.frames[inside][order]
        a, t = pair_peaks(moved, params)
        variants.append(
            QueryVariant(
                factor=factor,
                hashes=pack_hashes(
                    moved.bins[a], moved.bins[t], moved.frames[t] - moved.frames[a], params
                ),
                offsets=moved.frames[a].astype(np.int32),
                query_frames=recorded[a].astype(np.int32),
                max_postings=None if factor == 1.0 else max_postings,
                pitch_only=pitch_only and factor != 1.0,
            )
        )
    return variants


def merge_matches(first: Sequence[Match], second: Sequence[Match], limit: int) -> list[Match]:
    """Each song's more improbable match of the two lists, ordered as find_matches orders."""
    best: dict[int, Match] = {}
    for m in (*first, *second):
        if m.song_id not in best or m.chance_log10 < best[m.song_id].chance_log10:
            best[m.song_id] = m
    return sorted(best.values(), key=lambda m: (-m.score, m.chance_log10))[:limit]


def inconclusive(matches: Sequence[Match], params: MatchParams) -> bool:
    """True unless the best match is strong enough to be final: identification then goes on
    to the next tier of landmarks, and at last to the speed grid."""
    return not matches or matches[0].chance_log10 > params.accept_without_speed_search_log10


def speed_search_needed(matches: Sequence[Match], params: MatchParams) -> bool:
    """True when the clip's own speed settled nothing, or when its best match there drifts
    by more than a step of the speed grid (a residual time scale) without being improbable
    enough for a drifting match (accept_drifting_without_speed_search_log10): the clip may
    then play at another speed, and the grid holds a closer hypothesis. On the development
    corpus a 2 %-slow clip aligned at its own speed with another song built from the same
    samples (11 frames, drifting 1.3 %, final by the plain threshold) while its own song
    waited at 0.98 with 61."""
    if inconclusive(matches, params):
        return True
    best = matches[0]
    return (
        best.grid_speed == 1.0
        and abs(best.speed - 1.0) > params.speed_step
        and best.chance_log10 > params.accept_drifting_without_speed_search_log10
    )


def variant_of(fingerprints: Fingerprints, start_s: float = 0.0) -> QueryVariant:
    """A query fingerprinted at its own speed, as a single variant (of the analysis started
    `start_s` into the clip)."""
    return QueryVariant(
        1.0, fingerprints.hashes, fingerprints.offsets, fingerprints.offsets, start_s=start_s
    )


def best_offsets(
    groups: np.ndarray, delta: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Best offset bin of each group (a song, or a song under one hypothesis).

    Returns (group_ids, best_delta, best_score, total_votes) with one row per distinct group.
    The score of an offset bin is its votes plus its two neighbours'.
    """
    key = (groups << 32) + (delta + (1 << 31))
    uniq, counts = np.unique(key, return_counts=True)
    # uniq is sorted: the bins either side of one, when they exist, are its neighbours.
    adjacent = uniq[1:] == uniq[:-1] + 1
    window = counts.copy()
    window[:-1] += np.where(adjacent, counts[1:], 0)
    window[1:] += np.where(adjacent, counts[:-1], 0)
    uniq_group = uniq >> 32
    first = run_starts(uniq_group)
    group_ids = uniq_group[first]
    totals = np.add.reduceat(counts, first)
    # Per group, the bin with the highest windowed score (ties: most votes of its own, then
    # the earliest offset), as one sort of a packed key rather than a three-column lexsort.
    group_index = np.repeat(np.arange(len(first)), np.diff(np.append(first, len(uniq))))
    rank = pack_columns(group_index, window.max() - window, counts.max() - counts)
    order = stable_order(rank) if rank is not None else np.lexsort((-counts, -window, uniq_group))
    best = order[first]  # groups keep their places and sizes in the sorted order
    best_delta = (uniq[best] & 0xFFFFFFFF) - (1 << 31)
    return group_ids, best_delta, window[best], totals


def chance_log10_p(
    score: np.ndarray,
    total_hits: np.ndarray,
    song_frames: np.ndarray,
    query_frames: int,
    dispersion: float,
) -> np.ndarray:
    """log10 of the chance that *some* offset of a song reaches `score` by coincidence.

    Under the null a song's `total_hits` votes fall uniformly over the song_frames +
    query_frames offsets it could align at; a 3-bin window expects 3 * total / bins of them.
    The per-bin Poisson tail is multiplied by the number of bins (a Bonferroni bound).
    """
    bins = np.maximum(song_frames + query_frames, 1).astype(np.float64)
    lam = np.maximum(3.0 * dispersion * total_hits / bins, 1e-9)
    log_sf = poisson.logsf(score - 1, lam) / np.log(10.0)
    return np.minimum(0.0, log_sf + np.log10(bins))


@dataclass(frozen=True)
class _Votes:
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
    #: candidate (_collect_votes's `match_votes`); None: all were.
    strong: np.ndarray | None = None

    def select(self, mask: np.ndarray) -> _Votes:
        return _Votes(
            self.songs[mask],
            self.variant[mask],
            self.db_frame[mask],
            self.q_frame[mask],
            self.q_recorded[mask],
            self.song_frames[mask],
            self.n_songs,
            None if self.strong is None else self.strong[mask],
        )


def _hash_order(hashes: np.ndarray) -> np.ndarray:
    """Stable sort order of the hits by hash.

    Lookups return their hits sorted by hash, so the hits of a query are one sorted run per
    lookup tier (plus any uncompacted rows): timsort, numpy's stable sort, merges such runs in
    linear time, where packing keys for the fast unstable sort would sort from scratch."""
    if len(hashes) < 2 or bool((hashes[1:] >= hashes[:-1]).all()):
        return np.arange(len(hashes))
    return np.argsort(hashes, kind="stable")


#: Query/stored pairs built at once: a speed search's dense step at 100,000 songs pairs tens of
#: millions, and the int64 index arrays of all of them held several GB at once. Variants are
#: independent hypotheses (every group the matcher reduces is one song under one variant), so
#: they are paired a few at a time and only the pairs that could still make a match are kept.
_PAIRS_PER_CHUNK = 4_000_000


class _Pairing:
    """Where each variant's hashes sit among the hits, sorted by hash once.

    The hits are sorted once and each variant's few thousand hashes are searched in them,
    rather than every hit being searched in every variant."""

    def __init__(self, variants: Sequence[QueryVariant], hits: Hits) -> None:
        self.order = _hash_order(hits.hashes)
        sorted_hashes = hits.hashes[self.order]
        self.lo: list[np.ndarray] = []
        self.counts: list[np.ndarray] = []
        for v in variants:
            lo = np.searchsorted(sorted_hashes, v.hashes, side="left")
            counts = np.searchsorted(sorted_hashes, v.hashes, side="right") - lo
            if v.max_postings is not None:
                counts[counts > v.max_postings] = 0
            self.lo.append(lo)
            self.counts.append(counts)

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


def _promising(
    song: np.ndarray,
    variant: np.ndarray,
    delta: np.ndarray,
    width: int,
    min_votes: int,
    n_var: int,
) -> tuple[np.ndarray, int]:
    """Mask of the pairs whose (song, variant) group could still reach `min_votes` aligned
    votes, and the number of distinct songs among all the pairs.

    Votes only ever drop out later (duplicates) or line up within a band of offsets `width`
    wide (a residual time scale drifts them by at most that much along the query), and any
    such band lies within two adjacent buckets of that width. A group none of whose bucket
    pairs holds `min_votes` pairs can therefore never be reported, and at a large catalogue
    that is nearly every song a query touches: dropping them before the exact reductions
    leaves a small fraction of the pairs to sort. A song with fewer than `min_votes` pairs in
    all is dropped first by a count over song ids, which costs no sort at all.
    """
    per_song = np.bincount(song) if int(song.max()) < 16 * len(song) + 4096 else None
    if per_song is None:
        n_songs = len(unique_values(song))
        candidates = np.arange(len(song))
    else:
        n_songs = int(np.count_nonzero(per_song))
        candidates = np.flatnonzero(per_song[song] >= min_votes)
    keep = np.zeros(len(song), dtype=bool)
    if len(candidates) == 0:
        return keep, n_songs
    d = delta[candidates]
    bucket = (d - d.min()) // width
    bucket_bits = bits(int(bucket.max()) + 1)
    group = song[candidates] * n_var + variant[candidates]
    ordered = np.sort(group << bucket_bits | bucket)
    starts = run_starts(ordered)
    uniq = ordered[starts]
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
        return keep, n_songs
    keep[candidates] = np.isin(group, good_groups)
    return keep, n_songs


def _collect_votes(
    variants: Sequence[QueryVariant],
    hits: Hits,
    min_votes: int = 1,
    drift_frames: int = 0,
    match_votes: int | None = None,
) -> _Votes:
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
    vote also says whether its group could reach `match_votes` (_Votes.strong), judged on the
    same pairs as if `match_votes` had been the floor: the matches do not change.
    """
    empty = np.empty(0, dtype=np.int64)
    # The floor a match's group must pass, when it is above the candidates' (else None).
    split = match_votes if match_votes is not None and match_votes > min_votes else None
    if len(hits) == 0 or not any(len(v.hashes) for v in variants):
        return _Votes(empty, empty, empty, empty, empty, empty)
    n_var = len(variants)
    offsets = np.concatenate([v.offsets for v in variants]).astype(np.int64)
    base = np.cumsum([0] + [len(v.hashes) for v in variants])[:-1]
    pairing = _Pairing(variants, hits)
    chunks = pairing.chunks(_PAIRS_PER_CHUNK)
    # Distinct songs among all pairs (the chance model's count of candidates), over chunks.
    seen = np.zeros(int(hits.song_ids.max()) + 1, dtype=bool) if len(chunks) > 1 else None
    kept: list[tuple[np.ndarray, ...]] = []
    n_songs = 0
    for chunk in chunks:
        v_idx, q_idx, hit_idx = pairing.pairs(chunk)
        if len(hit_idx) == 0:
            continue
        q_flat = base[v_idx] + q_idx
        delta = hits.offsets[hit_idx].astype(np.int64) - offsets[q_flat]
        song = hits.song_ids[hit_idx].astype(np.int64)
        width = max(drift_frames, 1) + 3
        keep, n_songs = _promising(song, v_idx, delta, width, min_votes, n_var)
        columns = (v_idx, hit_idx, q_flat, delta, song)
        if split is not None:
            strong, _ = _promising(song, v_idx, delta, width, split, n_var)
            keep = keep | strong
            columns += (strong,)
        if seen is not None:
            seen[song] = True
        kept.append(tuple(a[keep] for a in columns))
    if seen is not None:
        n_songs = int(np.count_nonzero(seen))
    if not kept:
        return _Votes(empty, empty, empty, empty, empty, empty)
    v_idx, hit_idx, q_flat, delta, song, *strong = (
        kept[0] if len(kept) == 1 else tuple(np.concatenate(c) for c in zip(*kept, strict=True))
    )
    if len(hit_idx) == 0:
        return _Votes(empty, empty, empty, empty, empty, empty, n_songs)
    # Songs numbered 0..n-1 among the survivors, so that the keys below pack into 63 bits.
    song_list = unique_values(song)
    group = np.searchsorted(song_list, song).astype(np.int64) * n_var + v_idx
    recorded = np.concatenate([v.query_frames for v in variants]).astype(np.int64)
    hashes = np.concatenate([v.hashes for v in variants]).astype(np.int64)
    q_frame, q_recorded, q_hash = offsets[q_flat], recorded[q_flat], hashes[q_flat]
    shifted = delta - delta.min()
    # Every column non-negative and as narrow as this query allows, so the keys pack.
    q_rel = q_frame - q_frame.min()
    keep = _first_of_runs(group, shifted, q_rel)
    keep = keep[_first_of_runs(group[keep], shifted[keep], q_hash[keep])]
    kept_hits = hit_idx[keep]
    return _Votes(
        song[keep],
        v_idx[keep],
        hits.offsets[kept_hits].astype(np.int64),
        q_frame[keep],
        q_recorded[keep],
        hits.song_frames[kept_hits].astype(np.int64),
        n_songs,
        strong[0][keep] if split is not None else None,
    )


def _covered_span(frames: np.ndarray, max_gap: float) -> tuple[int, int]:
    """(first, last) frame of the largest run of `frames` with no gap over `max_gap`."""
    ordered = np.sort(frames)
    breaks = np.nonzero(np.diff(ordered) > max_gap)[0]
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [len(ordered) - 1]])
    best = int(np.argmax(ends - starts))  # ties: the earliest run
    return int(ordered[starts[best]]), int(ordered[ends[best]])


#: refine_time_scale first tries every this-many-th scale of its grid.
_COARSE_SCALE_STEP = 4


def _best_scale(
    db_frame: np.ndarray, q_frame: np.ndarray, scales: np.ndarray, tried: np.ndarray
) -> tuple[int, int, int]:
    """(index into scales, offset, score) of the best of the scales at indices `tried`."""
    d = np.round(db_frame[None, :] - scales[tried][:, None] * q_frame[None, :]).astype(np.int64)
    groups = np.broadcast_to(np.arange(len(tried))[:, None], d.shape)
    ids, best_delta, score, _ = best_offsets(groups.ravel(), d.ravel())
    # Neighbouring scales often tie (the +-1 bin window absorbs a little drift): the middle
    # of the plateau is the best estimate of the true scale.
    tied = np.nonzero(score == score.max())[0]
    top = int(tied[len(tied) // 2])
    return int(tried[ids[top]]), int(best_delta[top]), int(score[top])


def refine_time_scale(
    db_frame: np.ndarray, q_frame: np.ndarray, scales: np.ndarray
) -> tuple[int, int, int]:
    """Best (scale index, offset, score) when song time = offset + scale x query time.

    A residual time scale makes offsets drift along the query; re-voting under each candidate
    scale lines them up again. `scales` is a symmetric grid whose step moves the last query
    frame by about one frame. Re-voting costs (scales x votes), and a true match brings
    thousands of votes, so the grid is searched coarse to fine: every fourth scale first (the
    nearest is then at most two frames of drift off, which the +-1 bin window still gathers),
    then every scale within four steps of the best of those.
    """
    step = _COARSE_SCALE_STEP
    middle = len(scales) // 2
    coarse = middle + step * np.arange(-(middle // step), middle // step + 1)
    best, _, _ = _best_scale(db_frame, q_frame, scales, coarse)
    fine = np.arange(max(0, best - step), min(len(scales), best + step + 1))
    return _best_scale(db_frame, q_frame, scales, fine)


class Search(NamedTuple):
    """What a search over a query's variants found."""

    #: Matches that beat chance, best first (what find_matches returns).
    matches: list[Match]
    #: The most improbable songs whether or not they beat chance, most improbable first:
    #: where to look closer when nothing is conclusive.
    candidates: list[Match]


def find_matches(
    variants: Sequence[QueryVariant] | Fingerprints,
    hits: Hits,
    fp_params: FingerprintParams,
    params: MatchParams,
    speeds_tried: int = 1,
) -> list[Match]:
    """Scored matches of a query, best first, empty when nothing beats chance.

    The family-wise chance level multiplies each song's tail probability by the number of
    candidate songs and of speed and time-scale hypotheses tried: the variants given, or
    `speeds_tried` when more speeds were searched to choose them.
    """
    return search_matches(variants, hits, fp_params, params, speeds_tried).matches


def search_matches(
    variants: Sequence[QueryVariant] | Fingerprints,
    hits: Hits,
    fp_params: FingerprintParams,
    params: MatchParams,
    speeds_tried: int = 1,
    candidates: int = 0,
    weak_candidates: bool = False,
) -> Search:
    """find_matches, plus the `candidates` most improbable songs whatever their confidence,
    from the same votes: those of at least min_score votes first, then, with
    `weak_candidates` and while places are left, those of at least candidate_min_score
    (weak candidates, for the band envelopes to confirm: the searches whose candidates only
    choose where to search next do without them, and without their cost). The weak ones
    change no match: only the songs promising a match are refined for a time scale
    (refine_top), as if the weak ones had not been kept."""
    if isinstance(variants, Fingerprints):
        variants = [variant_of(variants)]
    query_frames = int(max((v.offsets.max() for v in variants if len(v.offsets)), default=0)) + 1
    drift = int(np.ceil(params.time_scale_range * query_frames))
    floor = params.min_score
    if candidates and weak_candidates:
        floor = min(floor, params.candidate_min_score)
    votes = _collect_votes(variants, hits, floor, drift, params.min_score)
    if len(votes.songs) == 0:
        return Search([], [])
    n_var = len(variants)
    vote_groups = votes.songs * n_var + votes.variant
    group_ids, best_delta, best_score, totals = best_offsets(
        vote_groups, votes.db_frame - votes.q_frame
    )
    if votes.strong is None:
        group_strong = np.ones(len(group_ids), dtype=bool)
    else:
        group_strong = np.isin(group_ids, unique_values(vote_groups[votes.strong]))
    # Best variant per song (of those promising a match, when it has one).
    song_of = group_ids // n_var
    order = np.lexsort((-best_score, ~group_strong, song_of))
    first = np.searchsorted(song_of[order], unique_values(song_of), side="left")
    best = order[first]
    songs = song_of[best]
    variant = group_ids[best] % n_var
    delta, score, total = best_delta[best].copy(), best_score[best].copy(), totals[best]
    scale = np.ones(len(songs))
    promising = np.flatnonzero(group_strong[best])

    step = min(0.005, 1.0 / max(query_frames, 1))
    n_scale_steps = int(np.ceil(params.time_scale_range / step))
    scales = 1.0 + step * np.arange(-n_scale_steps, n_scale_steps + 1)
    for i in promising[np.argsort(-score[promising])][: params.refine_top]:
        mine = votes.select((votes.songs == songs[i]) & (votes.variant == variant[i]))
        s_idx, s_delta, s_score = refine_time_scale(mine.db_frame, mine.q_frame, scales)
        if s_score > score[i]:
            score[i], delta[i], scale[i] = s_score, s_delta, scales[s_idx]

    vote_songs, first_vote = np.unique(votes.songs, return_index=True)
    lengths = votes.song_frames[first_vote[np.searchsorted(vote_songs, songs)]]
    log_p = chance_log10_p(score, total, lengths, query_frames, params.dispersion)
    hypotheses = max(votes.n_songs, 1) * max(n_var, speeds_tried) * len(scales)
    log_p += np.log10(hypotheses) + params.calibration_log10
    factors = np.array([v.factor for v in variants])[variant]
    log_p += np.where(factors != 1.0, params.calibration_log10_speed, 0.0)
    starts = np.array([v.start_s for v in variants])[variant]
    log_p += np.where(starts != 0.0, params.calibration_log10_phase, 0.0)
    confidence = 1.0 - np.clip(10.0**log_p, 0.0, 1.0)

    def match(c: int) -> Match:
        mine = votes.select((votes.songs == songs[c]) & (votes.variant == variant[c]))
        aligned = np.abs(mine.db_frame - scale[c] * mine.q_frame - delta[c]) <= 1.5
        span = _covered_span(mine.q_recorded[aligned], params.span_gap_s / fp_params.frame_s)
        chosen = variants[int(variant[c])]
        return Match(
            song_id=int(songs[c]),
            score=int(score[c]),
            confidence=float(confidence[c]),
            song_offset_s=float(delta[c]) * fp_params.frame_s - chosen.start_s,
            query_start_s=float(span[0]) * fp_params.frame_s + chosen.start_s,
            query_end_s=float(span[1] + 1) * fp_params.frame_s
            + fp_params.n_fft / fp_params.sample_rate_hz
            + chosen.start_s,
            speed=float(chosen.time_scale * scale[c]),
            chance_log10=float(log_p[c]),
            grid_speed=float(chosen.factor),
        )

    voted = score >= params.min_score
    eligible = np.nonzero(voted & (confidence >= params.min_confidence))[0]
    eligible = eligible[np.lexsort((log_p[eligible], -score[eligible]))]
    likely = np.nonzero(voted)[0]
    likely = likely[np.argsort(log_p[likely], kind="stable")]
    if len(likely) < candidates and floor < params.min_score:
        weak = np.nonzero(~voted & (score >= floor))[0]
        likely = np.concatenate([likely, weak[np.argsort(log_p[weak], kind="stable")]])
    return Search(
        [match(c) for c in eligible[: params.max_matches]],
        [match(c) for c in likely[:candidates]],
    )

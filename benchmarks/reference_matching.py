"""A plain reference matcher for benchmarks/latency.py.

Votes count once per query frame (instant), as in the service's matcher (`collect_votes`),
but with plain stable argsorts where the service uses one fast sort over packed indices and a
count over song ids before any sort; both must give the same matches. latency.py times both on
the same hits, side by side, and counts any clip where they differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import poisson

from service.arrays import unique_values
from service.audio.hashes import Fingerprints, pack_hashes, pair_peaks
from service.audio.params import FingerprintParams
from service.audio.peaks import Peaks


@dataclass(frozen=True)
class Hits:
    """Stored fingerprints that share a hash with the query; int arrays of shape (n,)."""

    hashes: np.ndarray
    song_ids: np.ndarray
    offsets: np.ndarray
    #: Length in frames of each hit's song (the chance model needs it per candidate song).
    song_frames: np.ndarray

    @classmethod
    def empty(cls) -> Hits:
        e = np.empty(0, dtype=np.int64)
        return cls(e, e.copy(), e.copy(), e.copy())

    def __len__(self) -> int:
        return len(self.hashes)


@dataclass(frozen=True)
class MatchParams:
    #: Minimum confidence (1 - chance probability over the whole catalogue) to report a match.
    min_confidence: float = 0.99
    #: Aligned anchors below which nothing is reported whatever the statistics say: a handful
    #: of coincident hashes can look improbable under the independence model yet happen in
    #: music that repeats itself.
    min_score: int = 5
    #: Chance hits in music cluster more than independent draws would (repeated bars, shared
    #: instruments, drones). Measured on the development corpus's unindexed clips, chance
    #: alignments reach about 10^3 times the probability the independence model gives them,
    #: so the model's probability is multiplied by 10^calibration_log10. Rescale it, rather
    #: than the confidence threshold, when re-calibrating on other music.
    calibration_log10: float = 3.0
    #: Added for matches at another speed of the grid, as service.match charges them, so
    #: that both matchers give the same answers.
    calibration_log10_speed: float = 0.0
    #: Expected chance votes per offset bin are multiplied by this (1: the plain model).
    dispersion: float = 1.0
    #: Aligned hashes separated from the rest by more than this (s) are left out of the span a
    #: match reports (query_start_s..query_end_s): one chance-aligned hash seconds before a song
    #: starts in a stream or a mix would otherwise move the reported start by as much.
    span_gap_s: float = 3.0
    #: Most matches returned, best first.
    max_matches: int = 5
    #: Candidate speeds searched when the clip does not match at its own speed: from
    #: 1 - speed_range to 1 + speed_range in steps of speed_step. A hash survives a residual
    #: speed error of about a quarter of a percent, so the step is half a percent.
    speed_range: float = 0.06
    speed_step: float = 0.005
    #: Residual time scales searched (tempo without pitch change and vice versa), +- this.
    time_scale_range: float = 0.07
    #: Candidate songs whose alignment is refined for a residual time scale.
    refine_top: int = 8
    #: A match at the clip's own speed this improbable by chance (log10) is final; anything
    #: weaker is compared with the best match across the speed grid.
    accept_without_speed_search_log10: float = -10.0

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


def speed_variants(
    peaks: Peaks, factors: Sequence[float], params: FingerprintParams
) -> list[QueryVariant]:
    """Hashes of the query re-computed as if played at each speed in `factors`."""
    variants = []
    for factor in factors:
        if factor == 1.0:
            bins, frames = peaks.bins, peaks.frames
        else:
            bins = np.round(peaks.bins / factor).astype(np.int32)
            frames = np.round(peaks.frames * factor).astype(np.int32)
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
            )
        )
    return variants


def inconclusive(matches: Sequence[Match], params: MatchParams) -> bool:
    """True unless the best match is strong enough to be final: identification then goes on
    to the next tier of landmarks, and at last to the speed grid."""
    return not matches or matches[0].chance_log10 > params.accept_without_speed_search_log10


def variant_of(fingerprints: Fingerprints) -> QueryVariant:
    """A query fingerprinted at its own speed, as a single variant."""
    return QueryVariant(1.0, fingerprints.hashes, fingerprints.offsets, fingerprints.offsets)


def best_offsets(
    groups: np.ndarray, delta: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Best offset bin of each group (a song, or a song under one hypothesis).

    Returns (group_ids, best_delta, best_score, total_votes) with one row per distinct group.
    The score of an offset bin is its votes plus its two neighbours'.
    """
    key = (groups << 32) + (delta + (1 << 31))
    uniq, counts = np.unique(key, return_counts=True)
    n = len(uniq)

    def neighbour_counts(step: int) -> np.ndarray:
        pos = np.minimum(np.searchsorted(uniq, uniq + step), n - 1)
        return np.where(uniq[pos] == uniq + step, counts[pos], 0)

    window = counts + neighbour_counts(-1) + neighbour_counts(1)
    uniq_group = uniq >> 32
    group_ids, first = np.unique(uniq_group, return_index=True)
    totals = np.add.reduceat(counts, first)
    # Per group, the bin with the highest windowed score (ties: most votes of its own).
    order = np.lexsort((-counts, -window, uniq_group))
    best = order[np.searchsorted(uniq_group[order], group_ids, side="left")]
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

    def select(self, mask: np.ndarray) -> _Votes:
        return _Votes(
            self.songs[mask],
            self.variant[mask],
            self.db_frame[mask],
            self.q_frame[mask],
            self.q_recorded[mask],
            self.song_frames[mask],
            self.n_songs,
        )


def _bits(n: int) -> int:
    return max(int(n).bit_length(), 1)


def _pairs(variants: Sequence[QueryVariant], hits: Hits) -> tuple[np.ndarray, ...]:
    """Every (variant, query landmark, stored fingerprint) sharing a hash, as index arrays.

    The hits are sorted by hash once and each variant's few thousand hashes are searched in
    them, rather than every hit being searched in every variant.
    """
    order = np.argsort(hits.hashes, kind="stable")
    sorted_hashes = hits.hashes[order]
    v_parts, q_parts, h_parts = [], [], []
    for v_idx, v in enumerate(variants):
        lo = np.searchsorted(sorted_hashes, v.hashes, side="left")
        hi = np.searchsorted(sorted_hashes, v.hashes, side="right")
        counts = hi - lo
        total = int(counts.sum())
        q_parts.append(np.repeat(np.arange(len(v.hashes)), counts))
        starts = np.repeat(lo - np.cumsum(counts) + counts, counts)
        h_parts.append(order[starts + np.arange(total)])
        v_parts.append(np.full(total, v_idx, dtype=np.int64))
    return np.concatenate(v_parts), np.concatenate(q_parts), np.concatenate(h_parts)


def _first_of_runs(*columns: np.ndarray) -> np.ndarray:
    """Indices of the first occurrence of each distinct row of `columns`, in row-sorted order.

    Columns whose value ranges fit in 63 bits together are packed into one int64 key: one
    sort of a flat array instead of np.unique(axis=0)'s row sort, which costs ten times more.
    """
    widths = [_bits(int(c.max())) for c in columns]
    if sum(widths) <= 63:
        key = np.zeros(len(columns[0]), dtype=np.int64)
        for column, width in zip(columns, widths, strict=True):
            key = key << width | column
        order = np.argsort(key, kind="stable")
        ordered = key[order]
        first = np.ones(len(order), dtype=bool)
        first[1:] = ordered[1:] != ordered[:-1]
    else:
        order = np.lexsort(columns[::-1])
        stacked = np.stack([c[order] for c in columns])
        first = np.ones(len(order), dtype=bool)
        first[1:] = (stacked[:, 1:] != stacked[:, :-1]).any(axis=0)
    return order[first]


def _promising(
    group: np.ndarray, delta: np.ndarray, width: int, min_votes: int, n_var: int
) -> tuple[np.ndarray, int]:
    """Mask of the pairs whose group could still reach `min_votes` aligned votes, and the
    number of distinct songs among all the pairs.

    Votes only ever drop out later (duplicates) or line up within a band of offsets `width`
    wide (a residual time scale drifts them by at most that much along the query), and any
    such band lies within two adjacent buckets of that width. A group none of whose bucket
    pairs holds `min_votes` pairs can therefore never be reported, and at a large catalogue
    that is nearly every song a query touches: dropping them before the exact reductions
    leaves a small fraction of the pairs to sort.
    """
    bucket = (delta - delta.min()) // width
    bucket_bits = _bits(int(bucket.max()) + 1)
    uniq, counts = np.unique(group << bucket_bits | bucket, return_counts=True)
    nxt = np.minimum(np.searchsorted(uniq, uniq + 1), len(uniq) - 1)
    pair = counts + np.where(uniq[nxt] == uniq + 1, counts[nxt], 0)
    groups = uniq >> bucket_bits
    songs = groups // n_var
    n_songs = int(np.count_nonzero(np.diff(songs))) + 1
    good = unique_values(groups[pair >= min_votes])
    if len(good) == 0:
        return np.zeros(len(group), dtype=bool), n_songs
    pos = np.minimum(np.searchsorted(good, group), len(good) - 1)
    return good[pos] == group, n_songs


def _collect_votes(
    variants: Sequence[QueryVariant], hits: Hits, min_votes: int = 1, drift_frames: int = 0
) -> _Votes:
    """Query/stored hash pairs, reduced to independent evidence.

    Votes that are not independent evidence count once per (song, variant, offset):
    - pairs whose anchors share a query frame (the peaks of one instant are one sound event);
    - repeats of one hash value (a sustained tone yields the same hash frame after frame, and
      two drones line up at many offsets by chance).
    Both reductions sort one packed int64 key per pair: sorting rows of a table (np.unique
    with axis=0) costs an order of magnitude more, and this is the matcher's hot loop. Groups
    that cannot reach `min_votes` votes within `drift_frames` of offset are dropped first.
    """
    empty = np.empty(0, dtype=np.int64)
    if len(hits) == 0 or not any(len(v.hashes) for v in variants):
        return _Votes(empty, empty, empty, empty, empty, empty)
    v_idx, q_idx, hit_idx = _pairs(variants, hits)
    if len(hit_idx) == 0:
        return _Votes(empty, empty, empty, empty, empty, empty)
    n_var = len(variants)
    offsets = np.concatenate([v.offsets for v in variants]).astype(np.int64)
    base = np.cumsum([0] + [len(v.hashes) for v in variants])[:-1]
    q_flat = base[v_idx] + q_idx
    delta = hits.offsets[hit_idx].astype(np.int64) - offsets[q_flat]
    song = hits.song_ids[hit_idx].astype(np.int64)
    keep, n_songs = _promising(
        song * n_var + v_idx, delta, max(drift_frames, 1) + 3, min_votes, n_var
    )
    v_idx, hit_idx, q_flat, delta, song = (a[keep] for a in (v_idx, hit_idx, q_flat, delta, song))
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
    )


def _covered_span(frames: np.ndarray, max_gap: float) -> tuple[int, int]:
    """(first, last) frame of the largest run of `frames` with no gap over `max_gap`."""
    ordered = np.sort(frames)
    breaks = np.nonzero(np.diff(ordered) > max_gap)[0]
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [len(ordered) - 1]])
    best = int(np.argmax(ends - starts))  # ties: the earliest run
    return int(ordered[starts[best]]), int(ordered[ends[best]])


def refine_time_scale(
    db_frame: np.ndarray, q_frame: np.ndarray, scales: np.ndarray
) -> tuple[int, int, int]:
    """Best (scale index, offset, score) when song time = offset + scale x query time.

    A residual time scale makes offsets drift along the query; re-voting under each candidate
    scale lines them up again.
    """
    d = np.round(db_frame[None, :] - scales[:, None] * q_frame[None, :]).astype(np.int64)
    groups = np.broadcast_to(np.arange(len(scales))[:, None], d.shape)
    ids, best_delta, score, _ = best_offsets(groups.ravel(), d.ravel())
    # Neighbouring scales often tie (the +-1 bin window absorbs a little drift): the middle
    # of the plateau is the best estimate of the true scale.
    tied = np.nonzero(score == score.max())[0]
    top = int(tied[len(tied) // 2])
    return int(ids[top]), int(best_delta[top]), int(score[top])


def find_matches(
    variants: Sequence[QueryVariant] | Fingerprints,
    hits: Hits,
    fp_params: FingerprintParams,
    params: MatchParams,
) -> list[Match]:
    """Scored matches of a query, best first, empty when nothing beats chance.

    The family-wise chance level multiplies each song's tail probability by the number of
    candidate songs and of speed and time-scale hypotheses tried.
    """
    if isinstance(variants, Fingerprints):
        variants = [variant_of(variants)]
    query_frames = int(max((v.offsets.max() for v in variants if len(v.offsets)), default=0)) + 1
    drift = int(np.ceil(params.time_scale_range * query_frames))
    votes = _collect_votes(variants, hits, params.min_score, drift)
    if len(votes.songs) == 0:
        return []
    n_var = len(variants)
    group_ids, best_delta, best_score, totals = best_offsets(
        votes.songs * n_var + votes.variant, votes.db_frame - votes.q_frame
    )
    # Best variant per song.
    song_of = group_ids // n_var
    order = np.lexsort((-best_score, song_of))
    first = np.searchsorted(song_of[order], unique_values(song_of), side="left")
    best = order[first]
    songs = song_of[best]
    variant = group_ids[best] % n_var
    delta, score, total = best_delta[best].copy(), best_score[best].copy(), totals[best]
    scale = np.ones(len(songs))

    step = min(0.005, 1.0 / max(query_frames, 1))
    n_scale_steps = int(np.ceil(params.time_scale_range / step))
    scales = 1.0 + step * np.arange(-n_scale_steps, n_scale_steps + 1)
    for i in np.argsort(-score)[: params.refine_top]:
        mine = votes.select((votes.songs == songs[i]) & (votes.variant == variant[i]))
        s_idx, s_delta, s_score = refine_time_scale(mine.db_frame, mine.q_frame, scales)
        if s_score > score[i]:
            score[i], delta[i], scale[i] = s_score, s_delta, scales[s_idx]

    vote_songs, first_vote = np.unique(votes.songs, return_index=True)
    lengths = votes.song_frames[first_vote[np.searchsorted(vote_songs, songs)]]
    log_p = chance_log10_p(score, total, lengths, query_frames, params.dispersion)
    log_p += np.log10(max(votes.n_songs, 1) * n_var * len(scales)) + params.calibration_log10
    factors = np.array([v.factor for v in variants])[variant]
    log_p += np.where(factors != 1.0, params.calibration_log10_speed, 0.0)
    confidence = 1.0 - np.clip(10.0**log_p, 0.0, 1.0)
    eligible = np.nonzero((score >= params.min_score) & (confidence >= params.min_confidence))[0]
    eligible = eligible[np.lexsort((log_p[eligible], -score[eligible]))]
    matches: list[Match] = []
    for c in eligible[: params.max_matches]:
        mine = votes.select((votes.songs == songs[c]) & (votes.variant == variant[c]))
        aligned = np.abs(mine.db_frame - scale[c] * mine.q_frame - delta[c]) <= 1.5
        span = _covered_span(mine.q_recorded[aligned], params.span_gap_s / fp_params.frame_s)
        factor = variants[int(variant[c])].factor
        matches.append(
            Match(
                song_id=int(songs[c]),
                score=int(score[c]),
                confidence=float(confidence[c]),
                song_offset_s=float(delta[c]) * fp_params.frame_s,
                query_start_s=float(span[0]) * fp_params.frame_s,
                query_end_s=float(span[1] + 1) * fp_params.frame_s
                + fp_params.n_fft / fp_params.sample_rate_hz,
                speed=float(factor * scale[c]),
                chance_log10=float(log_p[c]),
            )
        )
    return matches

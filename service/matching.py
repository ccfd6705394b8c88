"""Hits -> scored, aligned matches.

Each stored fingerprint that shares a hash with the query votes for (song, db_time - query_time).
A true match piles its votes into one offset bin; chance hits spread over all the offsets a song
could take. The score is the vote count of a song's best offset (+-1 frame, so a query whose
frame grid falls between two of the song's still counts fully), and the confidence says how
unlikely that count is by chance *for that song and that query*: the expected chance count per
bin is the song's total hits divided by the number of offsets it could align at, which grows
with the query's length and the song's, so one threshold serves 3-s and 60-s queries alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import poisson

from service.audio.hashes import Fingerprints, anchor_bins
from service.audio.params import FingerprintParams


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
    #: Aligned hashes below which nothing is reported whatever the statistics say: a handful of
    #: coincident hashes can look improbable under the independence model yet happen in music
    #: that repeats itself.
    min_score: int = 5
    #: Chance hits in music cluster more than independent draws would; inflating the expected
    #: count per bin by this factor keeps the tail estimate honest (calibrated on real music).
    dispersion: float = 2.0
    #: Most matches returned, best first.
    max_matches: int = 5


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
    speed: float = 1.0


def join_hits(query: Fingerprints, hits: Hits) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (song_id, delta_frames, query_frame) triples where a stored hash meets the query's.

    A hash may occur several times in the query; every occurrence pairs with every stored one.
    """
    if len(hits) == 0 or len(query) == 0:
        e = np.empty(0, dtype=np.int64)
        return e, e.copy(), e.copy()
    order = np.argsort(query.hashes, kind="stable")
    q_hash = query.hashes[order].astype(np.int64)
    q_time = query.offsets[order].astype(np.int64)
    lo = np.searchsorted(q_hash, hits.hashes, side="left")
    hi = np.searchsorted(q_hash, hits.hashes, side="right")
    counts = hi - lo
    hit_idx = np.repeat(np.arange(len(hits)), counts)
    # Position of each pair within its hit's run of equal query hashes.
    starts = np.repeat(lo - np.cumsum(counts) + counts, counts)
    q_idx = starts + np.arange(len(hit_idx))
    qt = q_time[q_idx]
    songs = hits.song_ids[hit_idx].astype(np.int64)
    delta = hits.offsets[hit_idx].astype(np.int64) - qt
    return songs, delta, qt, anchor_bins(q_hash[q_idx])


def _distinct(
    songs: np.ndarray, delta: np.ndarray, qt: np.ndarray, anchor: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = np.unique(np.stack([songs, delta, qt, anchor], axis=1), axis=0)
    return rows[:, 0], rows[:, 1], rows[:, 2]


def score_offsets(
    songs: np.ndarray, delta: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Best offset of each song.

    Returns (song_ids, best_delta, best_score, total_hits) with one row per distinct song.
    The score of an offset bin is its votes plus its two neighbours'.
    """
    key = (songs << 32) + (delta + (1 << 31))
    uniq, counts = np.unique(key, return_counts=True)
    pos_prev = np.searchsorted(uniq, uniq - 1)
    pos_next = np.searchsorted(uniq, uniq + 1)
    n = len(uniq)
    prev_counts = np.where(
        (pos_prev < n) & (uniq[np.minimum(pos_prev, n - 1)] == uniq - 1),
        counts[np.minimum(pos_prev, n - 1)],
        0,
    )
    next_counts = np.where(
        (pos_next < n) & (uniq[np.minimum(pos_next, n - 1)] == uniq + 1),
        counts[np.minimum(pos_next, n - 1)],
        0,
    )
    window = counts + prev_counts + next_counts
    uniq_song = uniq >> 32
    # Per song: total votes, and the bin with the highest windowed score (ties: most votes).
    song_ids, first = np.unique(uniq_song, return_index=True)
    totals = np.add.reduceat(counts, first)
    order = np.lexsort((-counts, -window, uniq_song))
    best = order[np.searchsorted(uniq_song[order], song_ids, side="left")]
    best_delta = (uniq[best] & 0xFFFFFFFF) - (1 << 31)
    return song_ids, best_delta, window[best], totals


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


def find_matches(
    query: Fingerprints,
    hits: Hits,
    fp_params: FingerprintParams,
    params: MatchParams,
) -> list[Match]:
    """Scored matches of a query, best first, empty when nothing beats chance.

    The family-wise chance level multiplies each song's tail probability by the number of
    candidate songs.
    """
    songs, delta, qt, anchor = join_hits(query, hits)
    if len(songs) == 0:
        return []
    # Pairs sharing an anchor peak are not independent evidence (a chord that happens to match
    # matches through several of its targets at once): count each anchor once per
    # (song, offset).
    songs, delta, qt = _distinct(songs, delta, qt, anchor)
    song_ids, best_delta, best_score, totals = score_offsets(songs, delta)
    query_frames = int(query.offsets.max()) + 1 if len(query) else 0
    hit_songs, first_hit = np.unique(hits.song_ids, return_index=True)
    lengths = hits.song_frames[first_hit[np.searchsorted(hit_songs, song_ids)]].astype(np.int64)
    log_p = chance_log10_p(best_score, totals, lengths, query_frames, params.dispersion)
    log_p += np.log10(max(len(song_ids), 1))
    p_chance = np.clip(10.0**log_p, 0.0, 1.0)
    confidence = 1.0 - p_chance
    eligible = (best_score >= params.min_score) & (confidence >= params.min_confidence)
    candidates = np.nonzero(eligible)[0]
    candidates = candidates[np.lexsort((log_p[candidates], -best_score[candidates]))]
    matches: list[Match] = []
    for c in candidates[: params.max_matches]:
        sel = (songs == song_ids[c]) & (np.abs(delta - best_delta[c]) <= 1)
        span = qt[sel]
        matches.append(
            Match(
                song_id=int(song_ids[c]),
                score=int(best_score[c]),
                confidence=float(confidence[c]),
                song_offset_s=float(best_delta[c]) * fp_params.frame_s,
                query_start_s=float(span.min()) * fp_params.frame_s,
                query_end_s=float(span.max() + 1) * fp_params.frame_s
                + fp_params.n_fft / fp_params.sample_rate_hz,
            )
        )
    return matches

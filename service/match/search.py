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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np

from service.arrays import unique_values
from service.audio.hashes import Fingerprints
from service.audio.params import FingerprintParams
from service.match.params import MatchParams
from service.match.scoring import _covered_span, chance_log10_p, refine_time_scale
from service.match.variants import QueryVariant, variant_of
from service.match.votes import _collect_votes, best_offsets
from service.store import Hits


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
    #: confidence is then the envelope check's, service/match/envelopes.py).
    evidence: Literal["landmarks", "envelope"] = "landmarks"


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

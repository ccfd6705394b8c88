"""Votes -> matches and candidates, best first, and when a result is conclusive.

Each stored fingerprint that shares a hash with the query votes for (song, db_time - query_time)
under each of the query's variants (variants.py). A true match piles its votes into one offset
bin; chance hits spread over all the offsets a song could take. Each song's best variant and
offset are scored (votes.py), refined for a residual time scale and judged against chance
(scoring.py). Every extra hypothesis tested (variants, speeds searched to choose them, time
scales) is paid for in the chance model, so the search does not buy false positives.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Literal, NamedTuple

import numpy as np

from service.arrays import sorted_positions, unique_values
from service.audio.hashes import Fingerprints
from service.audio.params import FingerprintParams
from service.match.pairs import AllowedGroups
from service.match.params import MatchParams
from service.match.scoring import chance_log10_p, covered_span, refine_time_scale
from service.match.variants import QueryVariant, variant_of
from service.match.votes import Votes, best_offsets, collect_votes
from service.store import Hits, LeftOut


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
    #: The distinct songs the chance model counted as candidates (search_matches'
    #: `songs_voted` for a search of some of those songs again).
    songs: int = 0


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
    return search_matches(variants, hits, fp_params, params, speeds_tried=speeds_tried).matches


def search_matches(
    variants: Sequence[QueryVariant] | Fingerprints,
    hits: Hits,
    fp_params: FingerprintParams,
    params: MatchParams,
    *,
    speeds_tried: int = 1,
    candidates: int = 0,
    weak_candidates: bool = False,
    songs_voted: int = 0,
    groups: AllowedGroups | None = None,
) -> Search:
    """find_matches, plus the `candidates` most improbable songs whatever their confidence,
    from the same votes: those of at least min_score votes first, then, with
    `weak_candidates` and while places are left, those of at least candidate_min_score
    (weak candidates, for the band envelopes to confirm: the searches whose candidates only
    choose where to search next do without them, and without their cost). The weak ones
    change no match: only the songs promising a match are refined for a time scale
    (refine_top), as if the weak ones had not been kept. `songs_voted`: the distinct songs
    the query's hashes met when `hits` holds only some of them, or `groups` lets only some
    (song, variant) groups vote (votes.aligning_groups chose which), so that the chance
    model counts every candidate song all the same."""
    if isinstance(variants, Fingerprints):
        variants = [variant_of(variants)]
    query_frames = int(max((v.offsets.max() for v in variants if len(v.offsets)), default=0)) + 1
    drift = int(np.ceil(params.time_scale_range * query_frames))
    floor = params.min_score
    if candidates and weak_candidates:
        floor = min(floor, params.candidate_min_score)

    def voted(narrow: bool) -> tuple[Votes, _Best | None]:
        votes = collect_votes(variants, hits, floor, drift, params.min_score, groups, narrow)
        return votes, _best_per_song(votes, len(variants)) if len(votes.songs) else None

    narrow = floor < params.min_score
    votes, best = voted(narrow)
    if narrow and not _narrowed_alike(votes, best, floor, params.refine_top):
        votes, best = voted(False)
    if best is None:
        return Search([], [])
    scales = _time_scales(params, query_frames)
    _refine(votes, best, scales, params.refine_top)
    songs = max(votes.n_songs, songs_voted, 1)
    hypotheses = songs * max(len(variants), speeds_tried) * len(scales)
    log_p = _chance_log10(
        votes, best, variants, params, _Chance(query_frames, hypotheses, hits.left_out)
    )
    confidence = 1.0 - np.clip(10.0**log_p, 0.0, 1.0)

    def match(c: int) -> Match:
        return _match_of(c, votes, best, variants, fp_params, params, confidence, log_p)

    voted = best.score >= params.min_score
    eligible = np.nonzero(voted & (confidence >= params.min_confidence))[0]
    eligible = eligible[np.lexsort((log_p[eligible], -best.score[eligible]))]
    likely = np.nonzero(voted)[0]
    likely = likely[np.argsort(log_p[likely], kind="stable")]
    if len(likely) < candidates and floor < params.min_score:
        weak = np.nonzero(~voted & (best.score >= floor))[0]
        likely = np.concatenate([likely, weak[np.argsort(log_p[weak], kind="stable")]])
    return Search(
        [match(c) for c in eligible[: params.max_matches]],
        [match(c) for c in likely[:candidates]],
        songs,
    )


@dataclass
class _Best:
    """Each voted song's best (variant, offset) and its score; one row per song. `delta`,
    `score` and `scale` are refined in place for a residual time scale."""

    songs: np.ndarray
    variant: np.ndarray
    delta: np.ndarray
    score: np.ndarray
    total: np.ndarray
    scale: np.ndarray
    #: Rows whose group could make a match (not only a weak candidate).
    promising: np.ndarray


def _best_per_song(votes: Votes, n_var: int) -> _Best:
    """Each song's best variant (of those promising a match, when it has one) at its best
    offset bin."""
    vote_groups = votes.songs * n_var + votes.variant
    group_ids, best_delta, best_score, totals = best_offsets(
        vote_groups, votes.db_frame - votes.q_frame
    )
    if votes.strong is None:
        group_strong = np.ones(len(group_ids), dtype=bool)
    else:
        group_strong = np.isin(group_ids, unique_values(vote_groups[votes.strong]))
    song_of = group_ids // n_var
    order = np.lexsort((-best_score, ~group_strong, song_of))
    first = np.searchsorted(song_of[order], unique_values(song_of), side="left")
    best = order[first]
    return _Best(
        songs=song_of[best],
        variant=group_ids[best] % n_var,
        delta=best_delta[best].copy(),
        score=best_score[best].copy(),
        total=totals[best],
        scale=np.ones(len(best)),
        promising=np.flatnonzero(group_strong[best]),
    )


def _narrowed_alike(votes: Votes, best: _Best | None, floor: int, refine_top: int) -> bool:
    """Whether votes collected with `narrow` (collect_votes) give the matches and candidates
    of votes collected without it; `best` (their rows) loses the rows that could be answered
    differently.

    Every group left out scores under `floor` on its own offsets, so it can be neither a
    match nor a candidate, and only a time scale could raise it: it would be re-voted for one
    only among the `refine_top` best promising rows (_refine). When the rows kept fill those
    places with scores of at least `floor`, it would not have been. A song whose promising
    groups were all left out (Votes.shadowed) would have been represented by one of them
    (_best_per_song prefers promising groups), so a row of it that is not promising is
    dropped: it would have been no candidate."""
    shadowed = votes.shadowed
    if shadowed is None or not len(shadowed):
        return True
    if best is None:
        return False
    stand_in = np.isin(best.songs, shadowed)
    stand_in[best.promising] = False
    if stand_in.any():
        _drop_rows(best, ~stand_in)
    if refine_top <= 0:
        return True
    scores = np.sort(best.score[best.promising])[::-1]
    return len(scores) >= refine_top and scores[refine_top - 1] >= floor


def _drop_rows(best: _Best, keep: np.ndarray) -> None:
    """Keep only the rows of `best` that `keep` (a mask) says."""
    promising = np.zeros(len(best.songs), dtype=bool)
    promising[best.promising] = True
    for f in fields(best):
        if f.name != "promising":
            setattr(best, f.name, getattr(best, f.name)[keep])
    best.promising = np.flatnonzero(promising[keep])


def _time_scales(params: MatchParams, query_frames: int) -> np.ndarray:
    """The residual time scales searched: a step moves the query's last frame by about one."""
    step = _time_scale_step(query_frames)
    n_scale_steps = int(np.ceil(params.time_scale_range / step))
    return 1.0 + step * np.arange(-n_scale_steps, n_scale_steps + 1)


def _time_scale_step(query_frames: int) -> float:
    return min(0.005, 1.0 / max(query_frames, 1))


def time_scale_reach(params: MatchParams, query_frames: int) -> float:
    """How far from 1 the residual time scales searched for a query of `query_frames` go:
    time_scale_range, rounded up to whole steps (_time_scales)."""
    step = _time_scale_step(query_frames)
    return math.ceil(params.time_scale_range / step - 1e-9) * step


def _refine(votes: Votes, best: _Best, scales: np.ndarray, refine_top: int) -> None:
    """The `refine_top` highest-scoring promising songs re-voted under each time scale; a
    scale that aligns more frames replaces the plain alignment."""
    promising = best.promising
    # Ties go to the lower song id (the rows' order), whichever rows were left out.
    for i in promising[np.argsort(-best.score[promising], kind="stable")][:refine_top]:
        mine = votes.select((votes.songs == best.songs[i]) & (votes.variant == best.variant[i]))
        s_idx, s_delta, s_score = refine_time_scale(mine.db_frame, mine.q_frame, scales)
        if s_score > best.score[i]:
            best.score[i], best.delta[i], best.scale[i] = s_score, s_delta, scales[s_idx]


@dataclass(frozen=True)
class _Chance:
    """What the chance model needs beside the votes."""

    query_frames: int
    #: Songs x variants (or speeds tried) x residual time scales.
    hypotheses: int
    #: What the lookups' budgets left out (records.LeftOut).
    left_out: LeftOut


def _chance_log10(
    votes: Votes,
    best: _Best,
    variants: Sequence[QueryVariant],
    params: MatchParams,
    chance: _Chance,
) -> np.ndarray:
    """log10 of each song's family-wise chance probability, calibrated (MatchParams).

    A song's chance votes are those it got, plus those the postings a lookup's budget left
    out would have brought it: each of a variant's hashes pairs with every posting of its
    hash, and a song holds its share of a hash's postings in proportion to its length.
    Without them a budget would keep only the rarest hashes and leave the model their few
    hits, so that chance alignments of similar music (whose rare hashes coincide the most)
    would look more improbable than with every hash looked up, the case the model is
    calibrated on."""
    vote_songs, first_vote = np.unique(votes.songs, return_index=True)
    lengths = votes.song_frames[first_vote[np.searchsorted(vote_songs, best.songs)]]
    total = best.total.astype(np.float64)
    left_out = chance.left_out
    if len(left_out):
        unseen = np.array([_unseen_pairs(left_out, v) for v in variants], dtype=np.float64)
        pairs = unseen[best.variant]
        for songs, hashes in left_out.completed:
            # Completed songs hold their share of those hashes' postings among their hits.
            mine = np.array([_unseen_pairs(left_out, v, hashes) for v in variants], np.float64)
            pairs = pairs - np.where(np.isin(best.songs, songs), mine[best.variant], 0.0)
        total += pairs * lengths / max(left_out.catalogue_frames, 1)
    log_p = chance_log10_p(best.score, total, lengths, chance.query_frames, params.dispersion)
    log_p += np.log10(chance.hypotheses) + params.calibration_log10
    factors = np.array([v.factor for v in variants])[best.variant]
    log_p += np.where(factors != 1.0, params.calibration_log10_speed, 0.0)
    starts = np.array([v.start_s for v in variants])[best.variant]
    log_p += np.where(starts != 0.0, params.calibration_log10_phase, 0.0)
    return log_p


def _unseen_pairs(left_out: LeftOut, variant: QueryVariant, among: np.ndarray | None = None) -> int:
    """Pairs of the variant's hashes (those in the sorted `among`, when given) with postings
    the budget left out (those a variant's own cap would drop anyway not counted)."""
    postings = left_out.postings_of(variant.hashes)
    if among is not None:
        postings = np.where(sorted_positions(among, variant.hashes)[0], postings, 0)
    if variant.max_postings is not None:
        postings = np.where(postings <= variant.max_postings, postings, 0)
    return int(postings.sum())


def _match_of(
    c: int,
    votes: Votes,
    best: _Best,
    variants: Sequence[QueryVariant],
    fp_params: FingerprintParams,
    params: MatchParams,
    confidence: np.ndarray,
    log_p: np.ndarray,
) -> Match:
    """Row `c` as a Match, its span that of the frames aligned at its offset and scale."""
    mine = votes.select((votes.songs == best.songs[c]) & (votes.variant == best.variant[c]))
    aligned = np.abs(mine.db_frame - best.scale[c] * mine.q_frame - best.delta[c]) <= 1.5
    span = covered_span(mine.q_recorded[aligned], params.span_gap_s / fp_params.frame_s)
    chosen = variants[int(best.variant[c])]
    return Match(
        song_id=int(best.songs[c]),
        score=int(best.score[c]),
        confidence=float(confidence[c]),
        song_offset_s=float(best.delta[c]) * fp_params.frame_s - chosen.start_s,
        query_start_s=float(span[0]) * fp_params.frame_s + chosen.start_s,
        query_end_s=float(span[1] + 1) * fp_params.frame_s
        + fp_params.n_fft / fp_params.sample_rate_hz
        + chosen.start_s,
        speed=float(chosen.time_scale * best.scale[c]),
        chance_log10=float(log_p[c]),
        grid_speed=float(chosen.factor),
    )

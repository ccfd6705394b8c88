"""Landmark matches and candidates of an unsettled clip -> what its band envelopes say.

- A clip no tier of landmarks could decide: the landmark votes of a noisy clip usually rank
  its song and offset among their first few candidates without beating chance, and the
  envelopes confirm the right one (confirm_by_envelope). Four aligned frames make a candidate
  (MatchParams.candidate_min_score), one fewer than a match needs; such a weak candidate pays
  EnvelopeCheckParams.calibration_log10_weak more. A candidate whose landmarks did beat
  chance, too narrowly to be final and replaced by a speed grid that found nothing better,
  needs less of the envelopes: their agreement (EnvelopeCheckParams.corroborate_z).
- A clip whose landmark matches beat chance, but too narrowly to be final: a match whose
  envelopes do not follow the clip at its offset is dropped (drop_contradicted).

service/match/envelopes.py judges each match or candidate from the clip's and its song's band
envelopes: one ranged read of up to 67 KB per song.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from service.audio.params import FingerprintParams
from service.match import Match, MatchParams, inconclusive
from service.match.envelopes import EnvelopeCheckParams, at_speed, envelope_z, fetch_range, score_of
from service.store import EnvelopeRange, Store

#: Candidates whose alignment drifts more than this (a residual time scale) are not checked:
#: envelopes are compared frame for frame, and over a 10-s clip 1 % is three frames of drift.
MAX_SCALE_OFF = 0.01


def _checkable(candidates: Sequence[Match], check: EnvelopeCheckParams) -> list[Match]:
    return [
        m
        for m in candidates[: check.candidates]
        if m.grid_speed == 1.0 and abs(m.speed - 1.0) <= MAX_SCALE_OFF
    ]


async def _envelope_zs(
    store: Store,
    envelope: np.ndarray,
    envelope_format: int,
    matches: Sequence[Match],
    params: FingerprintParams,
    check: EnvelopeCheckParams,
) -> list[float | None]:
    """Each match's envelope z-score at its offset and speed (None: the song has no envelope
    of this format, or too little of it lies under the clip), from one ranged read."""
    clips = [at_speed(envelope, m.speed) for m in matches]
    ats = [round(m.song_offset_s / params.frame_s) for m in matches]
    wanted = [fetch_range(at, len(clip), check) for at, clip in zip(ats, clips, strict=True)]
    # One range per song (the store returns one slice a song), spanning all of its matches'.
    spans: dict[int, tuple[int, int]] = {}
    for m, (first, last) in zip(matches, wanted, strict=True):
        low, high = spans.get(m.song_id, (first, last))
        spans[m.song_id] = (min(low, first), max(high, last))
    ranges = [EnvelopeRange(song_id, *span) for song_id, span in spans.items()]
    slices = await store.song_envelopes(ranges, envelope_format)

    def score() -> list[float | None]:
        zs: list[float | None] = []
        for m, at, clip, (first, last) in zip(matches, ats, clips, wanted, strict=True):
            song = slices.get(m.song_id)
            if song is None:
                zs.append(None)
                continue
            # Each match is judged against its own range of the song, whatever else was read.
            # (song.first is its span's first frame, at or before this match's.)
            values = song.values[first - song.first : last - song.first]
            zs.append(envelope_z(clip, values, at - first, check))
        return zs

    return await asyncio.to_thread(score)


#: Candidates of two analyses whose offsets are this close (frames) are the same candidate.
SAME_OFFSET_FRAMES = 1


def _not_among(
    extra: list[Match], tried: Sequence[Match], params: FingerprintParams
) -> list[Match]:
    """`extra` without the candidates `tried` holds already (same song and offset)."""
    return [
        m
        for m in extra
        if not any(
            t.song_id == m.song_id
            and abs(t.song_offset_s - m.song_offset_s) <= SAME_OFFSET_FRAMES * params.frame_s
            for t in tried
        )
    ]


async def confirm_by_envelope(
    store: Store,
    envelope: np.ndarray | None,
    envelope_format: int,
    candidates: Sequence[Match],
    params: FingerprintParams,
    match_params: MatchParams,
    phase_candidates: Sequence[Match] = (),
) -> Match | None:
    """The candidate the clip's `envelope` (service/audio/envelopes.py, of `envelope_format`)
    confirms most improbably, as a match whose confidence is the check's (or, when its
    landmarks beat chance and the envelopes only corroborate them, its own); None when none
    passes (or the clip, or every candidate's song, has no envelope).

    `phase_candidates` come from the clip analysed at other hop phases (identify.py): they
    are checked too, unless the clip's own analysis found them already, and pay
    MatchParams.calibration_log10_phase on top of all the candidates tried; the clip's own
    are judged as if they had been tried alone. Weak candidates (fewer aligned frames than
    MatchParams.min_score) only add answers too: the others are judged as if no weak one had
    been tried, and a weak one pays for every candidate tried and
    EnvelopeCheckParams.calibration_log10_weak.

    One function, as the chance charged to each candidate depends on which others were tried
    (own, phase, weak), which the loop below reads as it judges them."""
    check = match_params.envelope_check
    if check is None or envelope is None or len(envelope) == 0:
        return None
    floor = match_params.min_score
    own = _checkable(candidates, check)
    strong_own = [m for m in own if m.score >= floor]
    extra = [
        m
        for m in _not_among(_checkable(phase_candidates, check), strong_own, params)
        if m.score >= floor or _not_among([m], own, params)
    ]
    tried = own + extra
    if not tried:
        return None
    strong_tried = len(strong_own) + sum(m.score >= floor for m in extra)
    zs = await _envelope_zs(store, envelope, envelope_format, tried, params, check)
    answers: list[Match] = []
    for i, (z, match) in enumerate(zip(zs, tried, strict=True)):
        if z is None:
            continue
        if (
            match.confidence >= match_params.min_confidence
            and match.score >= floor
            and z >= check.corroborate_z
        ):
            # Its landmarks beat chance on their own (the speed grid, which replaced them,
            # found nothing better), and its rhythm agrees. (A weak candidate's, however
            # improbable, are too few to count as a match: MatchParams.min_score.)
            answers.append(match)
        if z < check.min_z:
            continue
        if match.score < floor:
            chance = score_of(z, len(tried), check).chance_log10 + check.calibration_log10_weak
        elif i < len(own):  # as if no phase had been tried: the phases only add answers
            chance = score_of(z, len(strong_own), check).chance_log10
        else:
            chance = score_of(z, strong_tried, check).chance_log10
        if i >= len(own):
            chance += match_params.calibration_log10_phase
        confidence = 1.0 - 10.0**chance
        if confidence >= match_params.min_confidence:
            answers.append(
                replace(match, confidence=confidence, chance_log10=chance, evidence="envelope")
            )
    return min(answers, key=lambda m: m.chance_log10, default=None)


async def drop_contradicted(
    store: Store,
    envelope: np.ndarray | None,
    envelope_format: int,
    matches: list[Match],
    params: FingerprintParams,
    match_params: MatchParams,
) -> list[Match]:
    """`matches` without the landmark matches too weak to be final whose band envelopes do
    not stand out at their offset (EnvelopeCheckParams.veto_z).

    A few seconds of a sample two songs share, or a chance alignment at a grid speed, can
    line up enough landmarks to beat chance narrowly; the rest of the clip then follows the
    song's rhythm no better than at any other offset, where a true match under noise still
    does. Matches whose songs (or the clip) have no envelopes are kept."""
    check = match_params.envelope_check
    if check is None or envelope is None or len(envelope) == 0:
        return matches
    # A clip whose best match is final is settled (and its read is spared); otherwise every
    # match that is not final is checked.
    if not inconclusive(matches, match_params):
        return matches
    weak = [m for m in matches if inconclusive([m], match_params)]
    if not weak:
        return matches
    zs = await _envelope_zs(store, envelope, envelope_format, weak, params, check)
    contradicted = {
        id(m) for m, z in zip(weak, zs, strict=True) if z is not None and z < check.veto_z
    }
    return [m for m in matches if id(m) not in contradicted]

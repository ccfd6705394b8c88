"""Landmark matches and candidates of an unsettled clip -> what its band envelopes say.

- A clip no tier of landmarks could decide: the landmark votes of a noisy clip usually rank
  its song and offset among their first few candidates without beating chance, and the
  envelopes confirm the right one (confirm_by_envelope).
- A clip whose landmark matches beat chance, but too narrowly to be final: a match whose
  envelopes do not follow the clip at its offset is dropped (drop_contradicted).

service/envelope_check.py judges each match or candidate from the clip's and its song's band
envelopes: one ranged read of up to 67 KB per song.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from service.audio.params import FingerprintParams
from service.envelope_check import (
    EnvelopeCheckParams,
    at_speed,
    envelope_z,
    fetch_range,
    score_of,
)
from service.matching import Match, MatchParams, inconclusive
from service.store.base import EnvelopeRange, Store

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
    ranges = [
        EnvelopeRange(m.song_id, *fetch_range(at, len(clip), check))
        for m, at, clip in zip(matches, ats, clips, strict=True)
    ]
    slices = await store.song_envelopes(ranges, envelope_format)

    def score() -> list[float | None]:
        zs: list[float | None] = []
        for m, at, clip in zip(matches, ats, clips, strict=True):
            song = slices.get(m.song_id)
            z = None if song is None else envelope_z(clip, song.values, at - song.first, check)
            zs.append(z)
        return zs

    return await asyncio.to_thread(score)


async def confirm_by_envelope(
    store: Store,
    envelope: np.ndarray | None,
    envelope_format: int,
    candidates: Sequence[Match],
    params: FingerprintParams,
    match_params: MatchParams,
) -> Match | None:
    """The best candidate the clip's `envelope` (service/audio/envelopes.py, of
    `envelope_format`) confirms, as a match whose confidence is the check's; None when none
    passes (or the clip, or every candidate's song, has no envelope)."""
    check = match_params.envelope_check
    if check is None or envelope is None or len(envelope) == 0:
        return None
    tried = _checkable(candidates, check)
    if not tried:
        return None
    zs = await _envelope_zs(store, envelope, envelope_format, tried, params, check)
    scored = [(z, m) for z, m in zip(zs, tried, strict=True) if z is not None]
    if not scored:
        return None
    z, match = max(scored, key=lambda zm: zm[0])
    if z < check.min_z:
        return None
    score = score_of(z, len(tried), check)
    confidence = 1.0 - 10.0**score.chance_log10
    if confidence < match_params.min_confidence:
        return None
    return replace(
        match, confidence=confidence, chance_log10=score.chance_log10, evidence="envelope"
    )


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

"""A clip no tier of landmarks could decide -> the match its band envelopes confirm, if any.

The landmark votes of a noisy clip usually rank its song and offset among their first few
candidates without beating chance; service/envelope_check.py judges those few candidates from
the clip's and each song's band envelopes, one ranged read of up to 67 KB per candidate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from service.audio.params import FingerprintParams
from service.envelope_check import EnvelopeCheckParams, envelope_z, fetch_range, score_of
from service.matching import Match, MatchParams
from service.store.base import EnvelopeRange, EnvelopeSlice, Store

#: Candidates whose alignment drifts more than this (a residual time scale) are not checked:
#: envelopes are compared frame for frame, and over a 10-s clip 1 % is three frames of drift.
MAX_SCALE_OFF = 0.01


def _checkable(candidates: Sequence[Match], check: EnvelopeCheckParams) -> list[Match]:
    return [
        m
        for m in candidates[: check.candidates]
        if m.grid_speed == 1.0 and abs(m.speed - 1.0) <= MAX_SCALE_OFF
    ]


def _best(
    query: np.ndarray,
    tried: list[Match],
    slices: dict[int, EnvelopeSlice],
    params: FingerprintParams,
    check: EnvelopeCheckParams,
) -> tuple[Match, float] | None:
    """The candidate whose envelope z-score is highest, with it; None if none could be
    scored."""
    best: tuple[Match, float] | None = None
    for m in tried:
        stored = slices.get(m.song_id)
        if stored is None:
            continue
        at = round(m.song_offset_s / params.frame_s) - stored.first
        z = envelope_z(query, stored.values, at, check)
        if z is not None and (best is None or z > best[1]):
            best = (m, z)
    return best


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
    ranges = []
    for m in tried:
        first, last = fetch_range(round(m.song_offset_s / params.frame_s), len(envelope), check)
        ranges.append(EnvelopeRange(m.song_id, first, last))
    slices = await store.song_envelopes(ranges, envelope_format)
    if not slices:
        return None
    best = await asyncio.to_thread(_best, envelope, tried, slices, params, check)
    if best is None or best[1] < check.min_z:
        return None
    match, z = best
    score = score_of(z, len(tried), check)
    confidence = 1.0 - 10.0**score.chance_log10
    if confidence < match_params.min_confidence:
        return None
    return replace(
        match, confidence=confidence, chance_log10=score.chance_log10, evidence="envelope"
    )

"""Identify a clip or a file: the use case the HTTP API, the CLI and the worker all call, so a
clip is identified the same way whichever of them asks."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from functools import partial

from service.audio.analysis import KEEP_SAMPLES_MAX_S, AnalysedAudio, analyse_query
from service.audio.hashes import Fingerprints, landmark_hashes
from service.audio.params import FingerprintParams
from service.core.identify.lookups import HitCache, postings_caps
from service.core.identify.tiers import Ladder, TierQuery, deeper_tiers, first_tier
from service.core.identify.timeline import SongTimelineEntry, file_matches
from service.core.identify.timeline import timeline as build_timeline
from service.executor import CpuPool
from service.match import (
    Match,
    MatchParams,
)
from service.store import Song, Store
from service.telemetry import metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SongMatch:
    song: Song
    match: Match


@dataclass(frozen=True)
class IdentifyResult:
    duration_s: float
    matches: list[SongMatch]
    elapsed_ms: float
    #: Every song found in a long file with its start and end, when asked for.
    timeline: list[SongTimelineEntry] | None = None
    #: (start s, end s) of the stretches of the file that could not be decoded.
    damaged_spans: list[tuple[float, float]] = field(default_factory=list)


#: Files longer than this get a timeline when the caller lets the length decide, and are
#: matched window by window whatever the caller says. The same bound as the samples
#: analyse_query keeps: a file matched as one clip is one it can analyse at other hop phases.
TIMELINE_AUTO_MIN_S = KEEP_SAMPLES_MAX_S


def second_tier_hashes(audio: AnalysedAudio, params: FingerprintParams) -> Fingerprints:
    """The hashes of a clip's second tier: of its sustained peaks when it has them (a clip
    analysed by analyse_query), else of its query-density peaks."""
    if audio.sustained_peaks is None:
        return audio.fingerprints
    return landmark_hashes(audio.sustained_peaks, params.for_queries())


async def identify_analysed(
    store: Store,
    audio: AnalysedAudio,
    match_params: MatchParams,
    params: FingerprintParams,
) -> list[SongMatch]:
    """The clip's matches from the tier ladder (tiers.py), its tiers fetching through one
    HitCache, and their songs."""
    caps = await postings_caps(store, match_params)
    cache = HitCache(store, max_hits=match_params.max_hits_per_lookup)
    query = TierQuery(
        peaks=audio.peaks,
        second_tier=partial(second_tier_hashes, audio, params),
        envelope=audio.envelope,
        envelope_format=audio.envelope_format,
        samples=audio.samples,
    )
    ladder = Ladder(caps, match_params, params)
    (matches,) = await first_tier(cache, [query], audio.duration_s, ladder)
    matches = await deeper_tiers(store, cache, query, matches, ladder)
    songs = await store.get_songs([m.song_id for m in matches])
    # A song deleted between lookup and fetch simply drops out of the answer.
    return [SongMatch(songs[m.song_id], m) for m in matches if m.song_id in songs]


async def identify_file(
    store: Store,
    pool: CpuPool,
    path: str | os.PathLike[str],
    match_params: MatchParams,
    params: FingerprintParams,
    timeline: bool | None = False,
    max_audio_s: float | None = None,
) -> IdentifyResult:
    """Identify a file; with `timeline` also list every song found with its start and end.

    `timeline=None` decides by length: files longer than TIMELINE_AUTO_MIN_S get one (the
    worker's reports use this), shorter ones are a single clip. A file that long is matched
    window by window whatever `timeline` says, and its matches are its timeline's songs, each
    once (its highest-scoring entry): matched as one clip, a 26-minute file's hashes met 277
    million postings at 100,000 songs, and an hour of music is not one song anyway. A file
    that decodes to more than `max_audio_s` raises AudioTooLong.
    """
    started = time.perf_counter()
    audio = await pool.run(
        partial(
            analyse_query, os.fspath(path), params, keep_samples=True, max_duration_s=max_audio_s
        )
    )
    analysed = time.perf_counter()
    long = audio.duration_s > TIMELINE_AUTO_MIN_S
    if timeline is None:
        timeline = long
    if long:
        entries = await build_timeline(store, audio, match_params, params)
        matches = [
            SongMatch(song, m) for song, m in file_matches(entries, match_params.max_matches)
        ]
    else:
        matches = await identify_analysed(store, audio, match_params, params)
        entries = await build_timeline(store, audio, match_params, params) if timeline else None
    result = IdentifyResult(
        duration_s=audio.duration_s,
        matches=matches,
        elapsed_ms=(time.perf_counter() - started) * 1000.0,
        timeline=entries if timeline else None,
        damaged_spans=audio.damaged_spans,
    )
    best = result.matches[0].match.evidence if result.matches else None
    metrics.record_identify(bool(result.matches), best, time.perf_counter() - analysed)
    log_result(result)
    return result


def log_result(result: IdentifyResult) -> None:
    """One `identify.result` line: the songs found, how sure, on what evidence, how fast."""
    log.info(
        "identified %d song(s) in %.1f s of audio",
        len(result.matches),
        result.duration_s,
        extra={
            "event": "identify.result",
            "match": bool(result.matches),
            "songs": [
                {"id": m.song.id, "title": m.song.title, "artist": m.song.artist}
                for m in result.matches
            ],
            "confidences": [round(m.match.confidence, 6) for m in result.matches],
            "evidence": [m.match.evidence for m in result.matches],
            "duration_s": round(result.duration_s, 3),
            "elapsed_ms": round(result.elapsed_ms, 1),
        },
    )

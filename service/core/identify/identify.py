"""Identify a clip or a file: the use case the HTTP API, the CLI and the worker all call, so a
clip is identified the same way whichever of them asks."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass

import numpy as np

from service.audio.analysis import KEEP_SAMPLES_MAX_S, AnalysedAudio, analyse_query
from service.audio.hashes import Fingerprints, landmark_hashes
from service.audio.params import DEFAULT_PARAMS, FingerprintParams
from service.audio.peaks import sustained_peaks_at_phases, thin_peaks
from service.core.identify.envelope_confirm import confirm_by_envelope, drop_contradicted
from service.core.identify.lookups import HitCache, first_tier_budget, postings_caps
from service.core.identify.speed_search import after_speed_search
from service.core.identify.timeline import SongTimelineEntry, file_matches
from service.core.identify.timeline import timeline as build_timeline
from service.executor import CpuPool
from service.match import (
    Match,
    MatchParams,
    QueryVariant,
    find_matches,
    inconclusive,
    merge_matches,
    search_matches,
    variant_of,
)
from service.store import Song, Store


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


def phase_variants(samples: np.ndarray, params: FingerprintParams) -> list[QueryVariant]:
    """The clip analysed again at its other hop phases (FingerprintParams.query_hop_phases):
    the hashes of each analysis's sustained peaks, as a variant starting that much later."""
    qparams = params.for_queries()
    return [
        variant_of(landmark_hashes(peaks, qparams), shift / params.sample_rate_hz)
        for shift, peaks in zip(
            params.hop_phase_shifts(), sustained_peaks_at_phases(samples, qparams), strict=True
        )
    ]


async def identify_analysed(
    store: Store,
    audio: AnalysedAudio,
    match_params: MatchParams,
    params: FingerprintParams = DEFAULT_PARAMS,
) -> list[SongMatch]:
    """Matches found in three tiers, each only when the one before is not conclusive.

    1. The clip's landmarks thinned to the index's density: the pairs a clean copy of the
       song was indexed with, a third of the query's hashes, so a third of the lookup, and
       at most MatchParams.max_hits_first_tier postings of them, the rarest hashes first.
       Nearly every real query ends here.
    2. The query's denser landmarks, picked for noise (noise hides some of the song's peaks;
       its held notes are among the steadiest of the rest: peaks.find_sustained_peaks); then,
       if that settles nothing either, the same from the clip analysed again at its other hop
       phases (FingerprintParams.query_hop_phases; a short clip, whose samples analyse_query
       kept): under heavy noise each start of the frame grid keeps other peaks of the song.
       One lookup, a variant per phase, each match charged MatchParams.calibration_log10_phase.
    3. The speed grid (speed_search.py): the clip's landmarks re-hashed under candidate
       speeds, coarse to fine, under the tighter MatchParams.frequent_hash_factor_speed cap;
       also when the match the first tiers settled on drifts by more than a grid step
       (matching.speed_search_needed), and that match then competes with the grid's.
    Each tier looks up only hashes not fetched yet. Then the band envelopes
    (envelope_confirm.py): matches that beat chance too narrowly to be final are dropped if
    their songs' envelopes do not follow the clip; when no match is left, the second tier's
    most improbable candidates, of the clip's own analysis and of its other phases (four
    aligned frames make one: MatchParams.candidate_min_score), are checked against theirs:
    noise that leaves too few landmarks still leaves the rhythm.
    """
    caps = await postings_caps(store, match_params)
    cache = HitCache(store, max_hits=match_params.max_hits_per_lookup)
    sparse = await asyncio.to_thread(
        lambda: landmark_hashes(thin_peaks(audio.peaks, params), params)
    )
    found = await cache.hits_for(
        sparse.hashes, caps.first, first_tier_budget(match_params, audio.duration_s)
    )
    matches = await asyncio.to_thread(
        find_matches, [variant_of(sparse)], found, params, match_params
    )
    candidates: list[Match] = []
    phase_candidates: list[Match] = []
    checked = match_params.envelope_check.candidates if match_params.envelope_check else 0
    if inconclusive(matches, match_params):
        dense = [variant_of(await asyncio.to_thread(second_tier_hashes, audio, params))]
        found = await cache.hits_for(dense[0].hashes, caps.deep)
        search = await asyncio.to_thread(
            search_matches, dense, found, params, match_params, 1, checked, weak_candidates=True
        )
        matches, candidates = search.matches, search.candidates
    if inconclusive(matches, match_params) and audio.samples is not None:
        phases = await asyncio.to_thread(phase_variants, audio.samples, params)
        if phases:
            # A cache of its own: the phases' hashes share one budget, and those it leaves
            # out must not count as asked when the speed grid's variants ask them again.
            phase_cache = HitCache(store, max_hits=match_params.max_hits_per_lookup)
            hashes = np.concatenate([v.hashes for v in phases])
            found = await phase_cache.hits_for(hashes, caps.deep)
            search = await asyncio.to_thread(
                search_matches,
                phases,
                found,
                params,
                match_params,
                1,
                checked,
                weak_candidates=True,
            )
            matches = merge_matches(matches, search.matches, match_params.max_matches)
            phase_candidates = search.candidates
    matches = await after_speed_search(
        cache, matches, audio.peaks, caps.speed, params, match_params
    )
    matches = await drop_contradicted(
        store, audio.envelope, audio.envelope_format, matches, params, match_params
    )
    if not matches and (candidates or phase_candidates):
        confirmed = await confirm_by_envelope(
            store,
            audio.envelope,
            audio.envelope_format,
            candidates,
            params,
            match_params,
            phase_candidates,
        )
        matches = [confirmed] if confirmed is not None else []
    songs = await store.get_songs([m.song_id for m in matches])
    # A song deleted between lookup and fetch simply drops out of the answer.
    return [SongMatch(songs[m.song_id], m) for m in matches if m.song_id in songs]


async def identify_file(
    store: Store,
    pool: CpuPool,
    path: str | os.PathLike[str],
    match_params: MatchParams,
    params: FingerprintParams = DEFAULT_PARAMS,
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
    audio = await pool.run(analyse_query, os.fspath(path), params, True, max_audio_s)
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
    return IdentifyResult(
        duration_s=audio.duration_s,
        matches=matches,
        elapsed_ms=(time.perf_counter() - started) * 1000.0,
        timeline=entries if timeline else None,
    )

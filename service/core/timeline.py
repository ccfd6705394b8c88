"""Long files with several songs (a DJ mix, a recorded radio hour): what plays when.

The file is cut into overlapping windows, each window is matched like a clip of its own, and
consecutive windows that agree on a song *and* on its alignment (the song position advances
with file time at the match's speed) merge into one entry with a start and an end. A song that
comes back later, or a jump inside a song, starts a new entry. All hashes of the file are
looked up at once, so an hour costs one round trip (a few more for the windows that need the
speed search, all of them together), not one per window.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

import numpy as np

from service.arrays import unique_values
from service.audio.params import DEFAULT_PARAMS, FingerprintParams
from service.audio.peaks import Peaks
from service.core.analysis import AnalysedAudio
from service.core.hit_cache import HitCache, hits_budget, postings_caps
from service.core.speed_search import search_speeds_batch
from service.matching import (
    Hits,
    Match,
    MatchParams,
    QueryVariant,
    find_matches,
    inconclusive,
    variant_of,
)
from service.store.base import Song, Store

#: Window length and hop (s): long enough to identify under noise, short enough that a song
#: change is located to a few seconds.
WINDOW_S = 10.0
HOP_S = 5.0
#: Alignment drift (s) tolerated between consecutive windows of one entry.
ALIGNMENT_TOLERANCE_S = 1.0


@dataclass(frozen=True)
class WindowMatch:
    window_start_s: float
    match: Match  # song_offset_s is the song position at window_start_s


@dataclass(frozen=True)
class TimelineEntry:
    song_id: int
    start_s: float  # in the file
    end_s: float
    song_start_s: float  # position in the song at start_s
    song_end_s: float
    score: int  # aligned anchors over the whole entry
    confidence: float  # of the most confident window
    speed: float


@dataclass(frozen=True)
class SongTimelineEntry:
    song: Song
    entry: TimelineEntry


def _window_bounds(n_frames: int, params: FingerprintParams) -> list[tuple[int, int]]:
    window = round(WINDOW_S / params.frame_s)
    hop = round(HOP_S / params.frame_s)
    last_start = max(0, n_frames - window)
    starts = list(range(0, last_start + 1, hop))
    if starts[-1] < last_start:
        starts.append(last_start)
    return [(s, s + window) for s in starts]


def _window_peaks(peaks: Peaks, lo: int, hi: int) -> Peaks:
    inside = (peaks.frames >= lo) & (peaks.frames < hi)
    return Peaks(peaks.frames[inside] - lo, peaks.bins[inside], peaks.prominence_db[inside])


def _slice(variant: QueryVariant, lo: int, hi: int) -> QueryVariant:
    """The part of a (speed 1.0) variant anchored in [lo, hi), rebased to start at 0."""
    inside = (variant.query_frames >= lo) & (variant.query_frames < hi)
    return QueryVariant(
        variant.factor,
        variant.hashes[inside],
        variant.offsets[inside] - lo,
        variant.query_frames[inside] - lo,
    )


def merge_windows(windows: list[WindowMatch]) -> list[TimelineEntry]:
    """Consecutive windows agreeing on song and alignment become one entry."""
    entries: list[TimelineEntry] = []
    current: list[WindowMatch] = []

    def close() -> None:
        if not current:
            return
        first, last = current[0], current[-1]
        start = first.window_start_s + first.match.query_start_s
        end = last.window_start_s + last.match.query_end_s
        speed = float(np.median([w.match.speed for w in current]))
        song_start = first.match.song_offset_s + first.match.query_start_s * first.match.speed
        entries.append(
            TimelineEntry(
                song_id=first.match.song_id,
                start_s=start,
                end_s=end,
                song_start_s=song_start,
                song_end_s=song_start + (end - start) * speed,
                score=sum(w.match.score for w in current),
                confidence=max(w.match.confidence for w in current),
                speed=speed,
            )
        )
        current.clear()

    for w in sorted(windows, key=lambda w: w.window_start_s):
        if current:
            prev = current[-1]
            expected = (
                prev.match.song_offset_s
                + (w.window_start_s - prev.window_start_s) * prev.match.speed
            )
            same = (
                w.match.song_id == prev.match.song_id
                and abs(w.match.song_offset_s - expected) <= ALIGNMENT_TOLERANCE_S
                # A gap of more than one missing window ends the entry.
                and w.window_start_s - prev.window_start_s <= 2 * HOP_S + 1e-6
            )
            if not same:
                close()
        current.append(w)
    close()
    return entries


async def timeline(
    store: Store,
    audio: AnalysedAudio,
    match_params: MatchParams,
    params: FingerprintParams = DEFAULT_PARAMS,
    hits: Hits | None = None,
) -> list[SongTimelineEntry]:
    """Every catalogue song found in a long file, with where it starts and ends.

    `hits` may carry the lookup of the file's own hashes when the caller already made it.
    """
    one = replace(match_params, max_matches=1)
    whole = variant_of(audio.fingerprints)
    bounds = _window_bounds(audio.n_frames, params)
    caps = await postings_caps(store, match_params)
    budget = hits_budget(match_params, audio.duration_s)
    if hits is None:
        hits = await store.lookup(unique_values(whole.hashes), caps.first, budget)

    def match_windows() -> tuple[list[WindowMatch], list[tuple[int, int]]]:
        found, missing = [], []
        for lo, hi in bounds:
            matches = find_matches([_slice(whole, lo, hi)], hits, params, one)
            if inconclusive(matches, one):
                missing.append((lo, hi))
            else:
                found.append(WindowMatch(lo * params.frame_s, matches[0]))
        return found, missing

    windows, missing = await asyncio.to_thread(match_windows)
    if missing:
        # Each window's own speed under the deep cap first (identify's second tier), then
        # the speed grid coarse to fine, as for a clip (speed_search.py).
        cache = HitCache(store, (whole.hashes, hits), caps.first, budget)
        await cache.hits_for(
            np.concatenate([_slice(whole, lo, hi).hashes for lo, hi in missing]),
            caps.deep,
            hits_budget(one, len(missing) * WINDOW_S),
        )
        searched = await search_speeds_batch(
            cache,
            [_window_peaks(audio.peaks, lo, hi) for lo, hi in missing],
            caps.speed,
            params,
            one,
            seconds_each=WINDOW_S,
        )
        windows += [
            WindowMatch(lo * params.frame_s, matches[0])
            for (lo, _), matches in zip(missing, searched, strict=True)
            if matches
        ]
    entries = merge_windows(windows)
    songs = await store.get_songs(sorted({e.song_id for e in entries}))
    return [SongTimelineEntry(songs[e.song_id], e) for e in entries if e.song_id in songs]

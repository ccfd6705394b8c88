"""Long files with several songs (a DJ mix, a recorded radio hour): what plays when.

The file is cut into overlapping windows, each window is matched like a clip of its own, and
consecutive windows that agree on a song *and* on its alignment (the song position advances
with file time at the match's speed) merge into one entry with a start and an end. A song that
comes back later, or a jump inside a song, starts a new entry. The windows are
matched in identify's tiers a batch at a time (tiers.py), so an hour costs a few dozen
round trips, not one per window, and what a lookup holds stays bounded however long the file.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

import numpy as np

from service.audio.analysis import AnalysedAudio
from service.audio.params import FingerprintParams
from service.audio.peaks import Peaks
from service.core.identify.lookups import postings_caps
from service.core.identify.tiers import Window, match_window_tiers
from service.match import Match, MatchParams
from service.store import Song, Store

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
    chance_log10: float = 0.0  # of the most confident window

    def as_match(self) -> Match:
        """The entry as a match of the whole file (times in the file)."""
        return Match(
            song_id=self.song_id,
            score=self.score,
            confidence=self.confidence,
            song_offset_s=self.song_start_s - self.start_s * self.speed,
            query_start_s=self.start_s,
            query_end_s=self.end_s,
            speed=self.speed,
            chance_log10=self.chance_log10,
        )


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
                chance_log10=min(w.match.chance_log10 for w in current),
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


#: Windows per batch: the first tier looks up a batch's windows at once (at most the first
#: tier's budget of 150,000 postings each), the deeper tiers one at a time.
BATCH_WINDOWS = 64


async def timeline(
    store: Store,
    audio: AnalysedAudio,
    match_params: MatchParams,
    params: FingerprintParams,
) -> list[SongTimelineEntry]:
    """Every catalogue song found in a long file, with where it starts and ends.

    The windows are matched in identify's tiers, a batch at a time (tiers.py): what a
    lookup holds stays that of one clip however long the file, where one lookup of all the
    hashes of a 26-minute file met 277 million postings at 100,000 songs.
    """
    one = replace(match_params, max_matches=1)
    bounds = _window_bounds(audio.n_frames, params)
    caps = await postings_caps(store, match_params)
    windows: list[WindowMatch] = []
    for start in range(0, len(bounds), BATCH_WINDOWS):
        batch = bounds[start : start + BATCH_WINDOWS]
        peaks = await asyncio.to_thread(
            lambda batch=batch: [
                Window(
                    _window_peaks(audio.peaks, lo, hi),
                    envelope=None if audio.envelope is None else audio.envelope[lo:hi],
                    envelope_format=audio.envelope_format,
                    sustained=None
                    if audio.sustained_peaks is None
                    else _window_peaks(audio.sustained_peaks, lo, hi),
                )
                for lo, hi in batch
            ]
        )
        found = await match_window_tiers(store, peaks, WINDOW_S, caps, one, params)
        windows += [
            WindowMatch(lo * params.frame_s, matches[0])
            for (lo, _), matches in zip(batch, found, strict=True)
            if matches
        ]
    entries = merge_windows(windows)
    songs = await store.get_songs(sorted({e.song_id for e in entries}))
    return [SongTimelineEntry(songs[e.song_id], e) for e in entries if e.song_id in songs]


def file_matches(entries: list[SongTimelineEntry], limit: int) -> list[tuple[Song, Match]]:
    """The whole file's answer from its timeline: each song once, as its highest-scoring
    entry, ordered as find_matches orders."""
    best: dict[int, SongTimelineEntry] = {}
    for e in entries:
        if e.song.id not in best or e.entry.score > best[e.song.id].entry.score:
            best[e.song.id] = e
    chosen = sorted(best.values(), key=lambda e: (-e.entry.score, e.entry.chance_log10))
    return [(e.song, e.entry.as_match()) for e in chosen[:limit]]

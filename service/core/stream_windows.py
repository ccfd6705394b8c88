"""A stream's fixed grid of windows: the segments' peaks joined across boundaries, matched.

Window k covers stream time [k x WINDOW_HOP_S, k x WINDOW_HOP_S + WINDOW_S). Its landmarks are
paired from the peaks of every stored segment it overlaps, so a window that straddles a
boundary is matched with the neighbour's adjacent seconds: no part of the stream is only ever
seen in 12-second pieces. A window's result depends only on the segments present, so
recomputing the windows a new segment touches gives the same matches whatever order the
segments came in.
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from service.audio.hashes import landmark_hashes
from service.audio.params import DEFAULT_PARAMS, FingerprintParams
from service.audio.peaks import Peaks
from service.core.hit_cache import HitCache, hits_budget, postings_caps
from service.core.speed_search import search_speeds_batch
from service.matching import (
    Hits,
    Match,
    MatchParams,
    find_matches,
    inconclusive,
    variant_of,
)
from service.store.base import Store, StreamSegment, StreamWindow

#: Window length and hop (s), as for timelines of long files (core/timeline.py).
WINDOW_S = 10.0
WINDOW_HOP_S = 5.0
#: Songs reported per window: two during a crossfade, one spare.
MATCHES_PER_WINDOW = 3

_PEAK_ROW = np.dtype([("frame", "<i4"), ("bin", "<i2"), ("prominence_db", "<f4")])


def pack_peaks(peaks: Peaks) -> bytes:
    """Peaks as 10 bytes each (frame int32, bin int16, prominence float32, little end)."""
    rows = np.empty(len(peaks), dtype=_PEAK_ROW)
    rows["frame"], rows["bin"], rows["prominence_db"] = (
        peaks.frames,
        peaks.bins,
        peaks.prominence_db,
    )
    return rows.tobytes()


def unpack_peaks(blob: bytes) -> Peaks:
    if len(blob) % _PEAK_ROW.itemsize:
        raise ValueError("peak blob of a stream segment is truncated")
    rows = np.frombuffer(blob, dtype=_PEAK_ROW)
    return Peaks(
        rows["frame"].astype(np.int32),
        rows["bin"].astype(np.int32),
        rows["prominence_db"].astype(np.float32),
    )


@dataclass(frozen=True)
class WindowHit:
    """A song found in a window, in stream time."""

    song_id: int
    score: int
    confidence: float
    #: Span of the window's hashes aligned with the song (stream clock, s).
    start_s: float
    end_s: float
    #: Position in the song at start_s (s), and the playback speed.
    song_pos_s: float
    speed: float

    @classmethod
    def of(cls, window_start_s: float, m: Match) -> WindowHit:
        return cls(
            song_id=m.song_id,
            score=m.score,
            confidence=round(m.confidence, 6),
            start_s=round(window_start_s + m.query_start_s, 3),
            end_s=round(window_start_s + m.query_end_s, 3),
            song_pos_s=round(m.song_offset_s + m.query_start_s * m.speed, 3),
            speed=round(m.speed, 5),
        )


def hits_to_json(hits: list[WindowHit]) -> str:
    return json.dumps([asdict(h) for h in hits], sort_keys=True)


def hits_from_json(text: str) -> list[WindowHit]:
    return [WindowHit(**h) for h in json.loads(text)]


def windows_touching(start_s: float, end_s: float) -> range:
    """Indices of the windows that overlap [start_s, end_s)."""
    first = math.floor((start_s - WINDOW_S) / WINDOW_HOP_S) + 1
    last = math.ceil(end_s / WINDOW_HOP_S) - 1
    return range(first, last + 1)


def _ordered(hits: Hits) -> Hits:
    """Hits in a canonical order. The database returns rows in whatever order its plan
    yields, and the matcher keeps the first of equal votes, so near-ties (a looped song
    aligning at two repeats) could otherwise resolve differently from one lookup to the next
    and the log would depend on which segments happened to be looked up together."""
    order = np.lexsort((hits.offsets, hits.song_ids, hits.hashes))
    return Hits(
        hits.hashes[order], hits.song_ids[order], hits.offsets[order], hits.song_frames[order]
    )


def window_start_s(index: int) -> float:
    return index * WINDOW_HOP_S


def window_peaks(
    index: int, segments: list[tuple[StreamSegment, Peaks]], params: FingerprintParams
) -> Peaks:
    """The peaks of every segment inside window `index`, on the window's frame grid."""
    lo_s = window_start_s(index)
    n_frames = round(WINDOW_S / params.frame_s)
    parts = []
    for segment, peaks in segments:
        if segment.end_s <= lo_s or segment.start_s >= lo_s + WINDOW_S:
            continue
        frames = peaks.frames + round((segment.start_s - lo_s) / params.frame_s)
        inside = (frames >= 0) & (frames < n_frames)
        parts.append((frames[inside], peaks.bins[inside], peaks.prominence_db[inside]))
    if not parts:
        e = np.empty(0, dtype=np.int32)
        return Peaks(e, e.copy(), np.empty(0, dtype=np.float32))
    frames, bins, prominence = (np.concatenate(c) for c in zip(*parts, strict=True))
    order = np.lexsort((bins, frames))
    return Peaks(frames[order].astype(np.int32), bins[order].astype(np.int32), prominence[order])


async def match_windows(
    store: Store,
    indices: list[int],
    segments: list[StreamSegment],
    match_params: MatchParams,
    params: FingerprintParams = DEFAULT_PARAMS,
) -> list[StreamWindow]:
    """Match the windows `indices` from the segments' peaks: one lookup for all of them at
    their own speed, then the speed search (coarse to fine, each step one lookup) for those
    that need it."""
    qparams = params.for_queries()
    per_window = replace(match_params, max_matches=MATCHES_PER_WINDOW)

    def prepare() -> tuple[list[Peaks], list]:
        decoded = [(s, unpack_peaks(s.peaks)) for s in segments]
        peaks = [window_peaks(k, decoded, params) for k in indices]
        return peaks, [variant_of(landmark_hashes(p, qparams)) for p in peaks]

    peaks, own = await asyncio.to_thread(prepare)
    hashes = [v.hashes for v in own if len(v.hashes)]
    caps = await postings_caps(store, per_window)
    cache = HitCache(store, max_hits=hits_budget(per_window, len(indices) * WINDOW_S))
    hits = _ordered(await cache.hits_for(np.concatenate(hashes), caps.first)) if hashes else None

    def first_pass() -> list[list[Match]]:
        if hits is None:
            return [[] for _ in indices]
        return [find_matches([v], hits, params, per_window) if len(v.hashes) else [] for v in own]

    found = await asyncio.to_thread(first_pass)
    retry = [
        i
        for i, matches in enumerate(found)
        if len(own[i].hashes) and inconclusive(matches, per_window)
    ]
    if retry:
        # Each window's own speed under the deep cap first (identify's second tier), then
        # the speed grid coarse to fine, as for a clip (speed_search.py).
        await cache.hits_for(np.concatenate([own[i].hashes for i in retry]), caps.deep)
        searched = await search_speeds_batch(
            cache, [peaks[i] for i in retry], caps.speed, params, per_window, _ordered
        )
        for i, matches in zip(retry, searched, strict=True):
            found[i] = matches
    return [
        StreamWindow(k, hits_to_json([WindowHit.of(window_start_s(k), m) for m in matches]))
        for k, matches in zip(indices, found, strict=True)
    ]

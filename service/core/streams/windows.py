"""A stream's fixed grid of windows: the segments' peaks (and band envelopes) joined across
boundaries, matched.

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

from service.arrays import pack_columns
from service.audio.params import FingerprintParams
from service.audio.peaks import Peaks
from service.core.identify.lookups import postings_caps
from service.core.identify.tiers import Window, match_window_tiers
from service.match import Match, MatchParams
from service.store import Hits, Store, StreamSegment, StreamWindow, envelope_slice

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
    # One packed key sorts five times faster than a lexsort of the three columns (15 -> 3 s for
    # the 25 million hits of a speed search at 100,000 songs). Equal keys are equal hits.
    if len(hits) == 0:
        return hits
    columns = (hits.hashes - hits.hashes.min(), hits.song_ids, hits.offsets)
    key = pack_columns(*columns) if min(int(c.min()) for c in columns) >= 0 else None
    order = np.lexsort(columns[::-1]) if key is None else np.argsort(key)
    return hits.select(order)


def window_start_s(index: int) -> float:
    return index * WINDOW_HOP_S


#: Seconds of a window that may be missing for it to count as complete: segments meet with
#: a few milliseconds of rounding between them.
COVERAGE_SLACK_S = 0.25


def window_covered_s(index: int, segments: list[StreamSegment]) -> float:
    """Seconds of window `index` that the segments cover."""
    lo = window_start_s(index)
    hi = lo + WINDOW_S
    return sum(max(0.0, min(s.end_s, hi) - max(s.start_s, lo)) for s in segments)


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


def window_envelope(
    index: int, segments: list[StreamSegment], params: FingerprintParams
) -> tuple[np.ndarray | None, int]:
    """The band envelopes of every segment inside window `index`, on the window's frame grid
    (frames no segment covers stay 0, no change), and their format; (None, 0) unless every
    such segment has envelopes of one format. Each segment's envelopes were taken against
    their own mean over +-0.5 s, within the segment: only the half-second at a boundary
    differs from the stream's as one recording."""
    lo_s = window_start_s(index)
    inside = [s for s in segments if s.end_s > lo_s and s.start_s < lo_s + WINDOW_S]
    layouts = {(s.envelope_format, s.envelope_bands) for s in inside}
    if len(layouts) != 1:
        return None, 0
    ((envelope_format, bands),) = layouts
    if envelope_format == 0 or bands <= 0:
        return None, 0
    n_frames = round(WINDOW_S / params.frame_s)
    out = np.zeros((n_frames, bands), dtype=np.int8)
    for segment in inside:
        values = envelope_slice(segment.envelope, bands, 0).values
        first = round((segment.start_s - lo_s) / params.frame_s)
        lo, hi = max(0, first), min(n_frames, first + len(values))
        if hi > lo:
            out[lo:hi] = values[lo - first : hi - first]
    return out, envelope_format


def second_tier_peaks(
    decoded: list[tuple[StreamSegment, Peaks]],
) -> list[tuple[StreamSegment, Peaks]]:
    """Each segment's peaks for its windows' second tier: its sustained ones
    (peaks.find_sustained_peaks), or the query-density `decoded` ones where it has none
    stored (segments stored before migration 0007, silence)."""
    return [
        (s, unpack_peaks(s.sustained_peaks) if s.sustained_peaks else peaks) for s, peaks in decoded
    ]


async def match_windows(
    store: Store,
    indices: list[int],
    segments: list[StreamSegment],
    match_params: MatchParams,
    params: FingerprintParams,
) -> list[StreamWindow]:
    """Match the windows `indices` from the segments' peaks, in identify's tiers
    (core/identify/tiers.py).

    Only a window whose audio is all there goes past the first tier: at 100,000 songs the
    deeper tiers cost seconds per window, and the windows reaching past the newest segment are
    matched again, complete, when the next one arrives. A window whose segment never comes (a
    gap, the end of the stream) keeps its first-tier matches. Which windows are complete
    depends only on the segments present, so the log still does not depend on the order they
    came in."""
    per_window = replace(match_params, max_matches=MATCHES_PER_WINDOW)

    def window(
        k: int,
        decoded: list[tuple[StreamSegment, Peaks]],
        sustained: list[tuple[StreamSegment, Peaks]],
    ) -> Window:
        envelope, envelope_format = window_envelope(k, segments, params)
        return Window(
            window_peaks(k, decoded, params),
            deep=window_covered_s(k, segments) >= WINDOW_S - COVERAGE_SLACK_S,
            envelope=envelope,
            envelope_format=envelope_format,
            sustained=window_peaks(k, sustained, params),
        )

    def prepare() -> list[Window]:
        decoded = [(s, unpack_peaks(s.peaks)) for s in segments]
        return [window(k, decoded, second_tier_peaks(decoded)) for k in indices]

    windows = await asyncio.to_thread(prepare)
    caps = await postings_caps(store, per_window)
    # One window at a time, the first tier too: a budget shared by the windows a segment
    # touches could leave out different hashes for a window touched by another segment, and
    # its matches would depend on which segment came last.
    found = [
        (await match_window_tiers(store, [w], WINDOW_S, caps, per_window, params, _ordered))[0]
        for w in windows
    ]
    return [
        StreamWindow(k, hits_to_json([WindowHit.of(window_start_s(k), m) for m in matches]))
        for k, matches in zip(indices, found, strict=True)
    ]

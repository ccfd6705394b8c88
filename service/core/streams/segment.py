"""Live-stream segments (`songs_to_check/streams/...`) -> the stream's airplay log.

Per segment: parse the key (core/streams/keys.py), decode, find peaks and band envelopes (in
the CPU pool), place the segment on the stream clock (core/streams/clock.py), then, under the
stream's lock: match every window of the stream's grid the segment touches, joined with its
neighbours' peaks and envelopes (core/streams/windows.py); rebuild the plays of the affected
region from all stored window matches (core/streams/log.py); write segment, windows, plays and
outbox events in one transaction. The log is a function of the stored windows, which are a
function of the segments present, so it comes out the same whatever order, how often and on
how many workers the segments arrive; only the events say how it got there.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Literal

from service.audio.analysis import AnalysedAudio, analyse_query
from service.audio.params import FingerprintParams
from service.core.streams.announce import Clock, Coverage
from service.core.streams.clock import place_segment, pts_epoch
from service.core.streams.health import note_segment
from service.core.streams.keys import parse_segment_key
from service.core.streams.log import (
    HANDOVER_GAP_S,
    LogChanges,
    LogParams,
    build_plays,
    ended_by_timeout,
    event_drafts,
    reconcile,
    settle,
    wall_clock,
)
from service.core.streams.windows import (
    WINDOW_HOP_S,
    WINDOW_S,
    WindowHit,
    hits_from_json,
    match_windows,
    pack_peaks,
    window_start_s,
    windows_touching,
)
from service.executor import CpuPool
from service.match import MatchParams
from service.store import (
    NewStream,
    Play,
    PlayFields,
    Store,
    StreamSegment,
    StreamState,
    StreamUpdate,
    StreamWindow,
    envelope_blob,
)
from service.telemetry.metrics import record_play_event, record_segment

log = logging.getLogger(__name__)

_FAR_S = 1e15
#: Region growth steps before giving up on a perfectly closed region (a play longer than
#: this many margins); the log is still consistent, only less tidy at the far edge.
_MAX_REGION_STEPS = 200


@dataclass(frozen=True)
class StreamParams:
    #: Nominal segment length (s): places segments without a PTS, and picks the PTS wrap.
    segment_s: float = 12.0
    #: How long segments' peaks and window matches are kept (s of stream time); segments
    #: older than that when they arrive are ignored.
    retention_s: float = 6 * 3600.0
    #: Whether windows that match nothing at their own speed go through the speed grid.
    speed_search: bool = True
    #: Most audio (s) a segment may decode to: segments last seconds, so more is a misplaced
    #: recording or a hostile file, refused (AudioTooLong) before it fills memory.
    max_audio_s: float = 600.0
    #: A hole in the stream's audio this long (s) is an outage (core/streams/health.py).
    down_after_s: float = 120.0
    log: LogParams = field(default_factory=LogParams)


@dataclass(frozen=True)
class SegmentResult:
    stream: str
    sequence: int
    key: str
    start_s: float
    duration_s: float
    pts_s: float | None
    placed_by: Literal["pts", "sequence"]
    #: What happened: stored, or ignored because another rendition's key sorts first or it
    #: arrived after its part of the stream was pruned.
    outcome: Literal["stored", "superseded", "too_late"]
    windows: list[tuple[int, list[WindowHit]]]
    #: Plays created or changed, by id.
    play_ids: list[int]
    #: (start s, end s) of the stretches that could not be decoded, from the segment's start.
    damaged_spans: list[tuple[float, float]] = field(default_factory=list)


async def process_stream_segment(
    store: Store,
    pool: CpuPool,
    bucket: str,
    key: str,
    local_path: str | os.PathLike[str],
    match_params: MatchParams,
    *,
    uploaded_at: datetime | None = None,
    params: StreamParams | None = None,
    fp_params: FingerprintParams,
    now: datetime | None = None,
) -> SegmentResult:
    """Add the segment at `s3://bucket/key`, downloaded to `local_path`, to its stream's log.

    `uploaded_at` (the object's Last-Modified) is when the segment's last sample was live;
    the first segment of a stream ties the stream clock to UTC with it. `now` (default: the
    wall clock) is when the segment is processed, which settles plays (announce.py).
    """
    del bucket  # one bucket per deployment; stream names are unique within it
    parsed = parse_segment_key(key)  # a bad key fails before any decoding
    # A segment's windows are matched from its stored peaks: its samples are not kept.
    params = params or StreamParams()
    audio = await pool.run(
        partial(
            analyse_query,
            os.fspath(local_path),
            fp_params,
            keep_samples=False,
            max_duration_s=params.max_audio_s,
        )
    )
    arrival = SegmentArrival(parsed.stream, parsed.sequence, key, uploaded_at or datetime.now(UTC))
    return await add_segment(
        store, arrival, audio, match_params, params=params, fp_params=fp_params, now=now
    )


@dataclass(frozen=True)
class SegmentArrival:
    """Which segment arrived, and when."""

    stream: str
    sequence: int
    #: The object key it came under (renditions of one sequence differ in their keys).
    key: str
    #: When its last sample was live (the object's Last-Modified).
    uploaded_at: datetime


async def add_segment(
    store: Store,
    arrival: SegmentArrival,
    audio: AnalysedAudio,
    match_params: MatchParams,
    *,
    params: StreamParams | None = None,
    fp_params: FingerprintParams,
    now: datetime | None = None,
) -> SegmentResult:
    """Place an analysed segment, match the windows it touches, update the log. With its band
    envelopes, the windows it is part of are checked against the songs' envelopes as clips
    are; with its sustained peaks, their second tier looks those up as a clip's does."""
    params = params or StreamParams()
    stream, sequence, key = arrival.stream, arrival.sequence, arrival.key
    async with store.stream_lock(stream):
        state = await _stream_state(store, arrival, audio, params)
        placement = place_segment(sequence, audio.start_pts_s, state.pts_epoch_s, params.segment_s)
        segment = _segment_record(arrival, audio, placement.start_s)

        def result(outcome: str, windows: list[StreamWindow], play_ids: list[int]) -> SegmentResult:
            return SegmentResult(
                stream=stream,
                sequence=sequence,
                key=key,
                start_s=round(segment.start_s, 3),
                duration_s=round(audio.duration_s, 3),
                pts_s=audio.start_pts_s,
                placed_by=placement.placed_by,
                outcome=outcome,  # type: ignore[arg-type]
                windows=[(w.index, hits_from_json(w.matches_json)) for w in windows],
                play_ids=play_ids,
                damaged_spans=audio.damaged_spans,
            )

        if segment.end_s < state.max_end_s - params.retention_s:
            log.warning("%s: segment %d is older than the retention; ignored", stream, sequence)
            return result("too_late", [], [])
        indices = list(windows_touching(segment.start_s, segment.end_s))
        lo_s = window_start_s(indices[0])
        hi_s = window_start_s(indices[-1]) + WINDOW_S
        around = await store.stream_segments(state.id, lo_s - 4 * params.segment_s - WINDOW_S, hi_s)
        same = [s for s in around if s.sequence == sequence]
        if same and same[0].key < key:
            log.info("%s: %s superseded by %s (same sequence)", stream, key, same[0].key)
            return result("superseded", [], [])
        segments = sorted(
            [s for s in around if s.sequence != sequence] + [segment], key=lambda s: s.start_s
        )
        fresh = await match_windows(
            store,
            indices,
            segments,
            match_params if params.speed_search else replace(match_params, speed_range=0.0),
            fp_params,
        )
        clock = Clock(now or datetime.now(UTC), params.log.settle_s)
        changes = await _recompute_log(store, state, fresh, segment, (lo_s, hi_s), params, clock)
        update = await _update(
            store, state, changes, segment=segment, windows=fresh, seen_at=clock.now
        )
        new_ids = await store.apply_stream_update(update)
        log_play_events(update)
        await note_segment(
            store, state, sequence, segment.start_s, segment.end_s, params.down_after_s
        )
        live_at = wall_clock(state.wall_origin, segment.end_s)
        record_segment(stream, (datetime.now(UTC) - live_at).total_seconds())
        return result("stored", fresh, sorted([*new_ids, *changes.changed_plays]))


async def _stream_state(
    store: Store, arrival: SegmentArrival, audio: AnalysedAudio, params: StreamParams
) -> StreamState:
    """The segment's stream; its first segment creates it, tying its clock to the PTS (or
    the sequence) and to the wall clock."""
    state = await store.get_stream(arrival.stream)
    if state is not None:
        return state
    pts_s, duration_s = audio.start_pts_s, audio.duration_s
    epoch = pts_epoch(arrival.sequence, pts_s, params.segment_s)
    first = place_segment(arrival.sequence, pts_s, epoch, params.segment_s).start_s
    return await store.ensure_stream(
        NewStream(
            name=arrival.stream,
            pts_epoch_s=epoch,
            wall_origin=arrival.uploaded_at - timedelta(seconds=first + duration_s),
            max_end_s=first + duration_s,
            last_sequence=arrival.sequence,
            last_key=arrival.key,
        )
    )


def _segment_record(arrival: SegmentArrival, audio: AnalysedAudio, start_s: float) -> StreamSegment:
    """The segment as the store keeps it: its peaks and envelopes packed."""
    envelope, sustained = audio.envelope, audio.sustained_peaks
    return StreamSegment(
        sequence=arrival.sequence,
        key=arrival.key,
        start_s=start_s,
        duration_s=audio.duration_s,
        pts_s=audio.start_pts_s,
        n_frames=audio.n_frames,
        peaks=pack_peaks(audio.peaks),
        envelope_format=audio.envelope_format if envelope is not None else 0,
        envelope_bands=envelope.shape[1] if envelope is not None else 0,
        envelope=envelope_blob(envelope) if envelope is not None else b"",
        sustained_peaks=pack_peaks(sustained) if sustained is not None else b"",
    )


async def _recompute_log(
    store: Store,
    state: StreamState,
    fresh: list[StreamWindow],
    segment: StreamSegment,
    region: tuple[float, float],
    params: StreamParams,
    clock: Clock,
) -> LogChanges:
    """Rebuild the plays around `region` (lo_s, hi_s) from stored and fresh windows, the new
    `segment` counted as arrived.

    The region grows until every play that touches it, recomputed or stored, lies inside
    it, with a margin of windows around it that could still join them; then the plays
    inside are reconciled with the stored ones, and the stream's other current or
    unannounced plays settled (announce.py).
    """
    lo_s, hi_s = region
    stream_end_s = max(state.max_end_s, segment.end_s)
    fresh_by_index = {w.index: w for w in fresh}
    margin_s = params.log.gap_s + WINDOW_S
    for _ in range(_MAX_REGION_STEPS):
        first = math.floor((lo_s - margin_s) / WINDOW_HOP_S)
        last = math.ceil((hi_s + margin_s) / WINDOW_HOP_S)
        windows = {w.index: w for w in await store.stream_windows(state.id, first, last)}
        windows.update({k: w for k, w in fresh_by_index.items() if first <= k <= last})
        plays = build_plays(
            ((k, hits_from_json(w.matches_json)) for k, w in sorted(windows.items())), params.log
        )
        # Plays a handover away share a boundary with the region's (log.HANDOVER_GAP_S).
        near_lo, near_hi = lo_s - HANDOVER_GAP_S, hi_s + HANDOVER_GAP_S
        old = await store.stream_plays(state.id, near_lo, near_hi)
        touching = [p for p in plays if p.end_s >= near_lo and p.start_s <= near_hi]
        spans: list[PlayFields] = [*touching, *old]
        new_lo = min([lo_s, *(p.start_s for p in spans)])
        new_hi = max([hi_s, *(p.end_s for p in spans)])
        if new_lo >= lo_s and new_hi <= hi_s:
            break
        lo_s, hi_s = new_lo, new_hi
    else:
        log.warning("%s: play region did not close around [%.1f, %.1f]", state.name, lo_s, hi_s)
    arrived = (segment.sequence, segment.start_s, segment.end_s)
    coverage = await _coverage(store, state, lo_s, hi_s, params.log, arrived)
    changes = reconcile(old, touching, stream_end_s, params.log, coverage, clock)
    others = await _unsettled(store, state)
    reconciled = {p.id for p in old}
    outside = [p for p in others if p.id not in reconciled]
    if outside:
        lo = min(p.start_s for p in outside)
        hi = max(p.end_s for p in outside)
        around = await _coverage(store, state, lo, hi, params.log, arrived)
        settled = settle(outside, stream_end_s, params.log, around, clock)
        changes.changed_plays.update(settled.changed_plays)
        changes.events.extend(settled.events)
    return changes


async def _coverage(
    store: Store,
    state: StreamState,
    lo_s: float,
    hi_s: float,
    params: LogParams,
    arrived: tuple[int, float, float] | None = None,
) -> Coverage:
    """What of the stream has arrived around plays in [lo_s, hi_s], as far as the announcing
    rule looks (announce.py)."""
    rows = await store.segment_spans(
        state.id, lo_s - params.lead_s, hi_s + max(params.gap_s, params.confirm_s)
    )
    return Coverage.of([*rows, arrived] if arrived else rows)


async def _unsettled(store: Store, state: StreamState) -> list[Play]:
    """The stream's plays still to be announced or ended, by id."""
    playing = await store.stream_plays(state.id, -_FAR_S, _FAR_S, playing_only=True)
    unannounced = await store.unannounced_plays(state.id)
    return list({p.id: p for p in [*playing, *unannounced]}.values())


async def _update(
    store: Store,
    state: StreamState,
    changes: LogChanges,
    *,
    segment: StreamSegment | None = None,
    windows: list[StreamWindow] | None = None,
    seen_at: datetime | None = None,
) -> StreamUpdate:
    song_ids = sorted({e[3].song_id for e in changes.events})
    songs = await store.get_songs(song_ids) if song_ids else {}
    return StreamUpdate(
        stream_id=state.id,
        segment=segment,
        windows=windows or [],
        new_plays=changes.new_plays,
        changed_plays=changes.changed_plays,
        events=event_drafts(changes, state.name, state.wall_origin, songs),
        seen_at=seen_at,
    )


def log_play_events(update: StreamUpdate) -> None:
    """One line per play event an update wrote (play.started, play.ended, ...)."""
    for draft in update.events:
        play = draft.payload.get("play", {})
        song = play.get("song") or {}
        log.info(
            "%s: %s %s",
            draft.payload.get("stream"),
            draft.event_type,
            song.get("title"),
            extra={
                "event": draft.event_type,
                "stream": draft.payload.get("stream"),
                "play_id": play.get("id", draft.play_id),
                "song_id": song.get("id"),
                "start_at": play.get("start_at"),
                "end_at": play.get("end_at"),
                "confidence": play.get("confidence"),
            },
        )
        record_play_event(draft.event_type)


async def end_idle_plays(store: Store, timeout_s: float) -> list[str]:
    """End the current plays of streams with no segment for `timeout_s`, and announce the
    plays they hold unannounced (nothing more is coming to undo them); the names."""
    ended = []
    for candidate in await store.idle_streams(timeout_s):
        async with store.stream_lock(candidate.name):
            # A segment may have come in since the first look.
            still = {s.id: s for s in await store.idle_streams(timeout_s)}
            state = still.get(candidate.id)
            if state is None:
                continue
            changes = ended_by_timeout(await _unsettled(store, state))
            if changes.changed_plays:
                update = await _update(store, state, changes)
                await store.apply_stream_update(update)
                log_play_events(update)
                ended.append(state.name)
    return ended


async def settle_streams(
    store: Store, params: StreamParams, now: datetime | None = None
) -> list[str]:
    """Announce or end the plays that have waited `settle_s` for segments that never came
    (announce.py), on every stream; the names of the streams that changed."""
    clock = Clock(now or datetime.now(UTC), params.log.settle_s)
    changed = []
    for candidate in await store.list_streams():
        if not any(clock.due(p) for p in await _unsettled(store, candidate)):
            continue  # a look without the lock: most streams have nothing waiting
        async with store.stream_lock(candidate.name):
            state = await store.get_stream(candidate.name)
            if state is None:
                continue
            plays = [p for p in await _unsettled(store, state) if clock.due(p)]
            if not plays:
                continue
            lo, hi = min(p.start_s for p in plays), max(p.end_s for p in plays)
            coverage = await _coverage(store, state, lo, hi, params.log)
            changes = settle(plays, state.max_end_s, params.log, coverage, clock)
            if changes.changed_plays:
                await store.apply_stream_update(await _update(store, state, changes))
                changed.append(state.name)
    return changed


async def prune_streams(store: Store, params: StreamParams) -> int:
    """Drop peaks and window matches older than the retention; segments dropped."""
    dropped = 0
    for state in await store.list_streams():
        before_s = state.max_end_s - params.retention_s
        async with store.stream_lock(state.name):
            dropped += await store.prune_stream(
                state.id, before_s, math.floor((before_s - WINDOW_S) / WINDOW_HOP_S)
            )
    return dropped

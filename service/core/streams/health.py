"""Stream health: when a live stream stops delivering audio, and when it comes back.

A gap is a hole of at least `down_after_s` (STREAM_DOWN_AFTER_S) in a stream's segments'
coverage of the stream clock, kept for good in the store with its stream.down and stream.up
events. Two things find them:

- The worker's stream sweeper, on the wall clock: a stream whose audio is known only up to
  more than `down_after_s` ago (wall clock of its latest segment end) is down. It opens the
  stream's one open gap from that end (`detect_down_streams`); the store opens it once
  however many workers notice.
- Each stored segment (`note_segment`, under the stream's lock), on the stream clock: a
  segment after an open gap closes it (the stream is up); one that leaves a hole of at least
  `down_after_s` before or after it, which nobody saw live (segments delayed, delivered out
  of order, or no sweeper running), records that hole as a closed gap; one that lands inside
  a recorded gap shrinks it to the part still missing, splits it in two, or, when what is
  left is shorter than `down_after_s` and nothing was announced, removes it.

Gap bounds are always the ends of neighbouring segments, so the gaps a set of segments leaves
are the same whatever order the segments arrived in. Each gap's stream.down and stream.up go
out once, in that order (the `published` flags are their outbox): an open gap's down at once;
a gap found on arrival only once the stream's head is `down_after_s` past its end, so that
segments arriving out of order by less than that first fill the holes they leave behind. A
gap already announced that late segments fill below `down_after_s` keeps its larger
remaining part: its events stand. The events carry the gap's bounds as known when they go
out; GET /streams/{name} has the latest.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from service.core.streams.log import wall_clock
from service.store import Store, StreamGap, StreamState
from service.telemetry import metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GapEdit:
    """A gap to insert (`gap_id` None), to move to new bounds, or to remove."""

    gap_id: int | None
    from_s: float
    to_s: float | None
    remove: bool = False


def gap_edits(
    gaps: list[StreamGap],
    before_end_s: float | None,
    after_start_s: float | None,
    start_s: float,
    end_s: float,
    down_after_s: float,
) -> list[GapEdit]:
    """What a new segment [start_s, end_s) does to its stream's gaps, given the latest end of
    the segments before it and the earliest start of those after it (None: there are none)."""
    open_gap = next((g for g in gaps if g.to_s is None), None)
    if after_start_s is None:  # the stream's new head
        if open_gap is not None and end_s > open_gap.from_s:
            return [GapEdit(open_gap.id, open_gap.from_s, max(open_gap.from_s, start_s))]
        if open_gap is None and before_end_s is not None and start_s - before_end_s >= down_after_s:
            return [GapEdit(None, before_end_s, start_s)]
        return []
    # Within the stream: the hole [before_end_s, after_start_s) it lands in is split.
    lo = before_end_s if before_end_s is not None else start_s
    pieces = [(lo, start_s), (end_s, after_start_s)]
    long = [(a, b) for a, b in pieces if b - a >= down_after_s]
    holder = next(
        (g for g in gaps if g.to_s is not None and g.from_s < after_start_s and g.to_s > lo),
        None,
    )
    if holder is None:
        return [GapEdit(None, a, b) for a, b in long]
    if not long:
        if not holder.down_published:  # a hole of out-of-order delivery, now filled
            return [GapEdit(holder.id, holder.from_s, holder.to_s, remove=True)]
        a, b = max(pieces, key=lambda p: p[1] - p[0])  # announced: the part still missing
        return [GapEdit(holder.id, a, max(a, b))]
    first, *others = long
    return [GapEdit(holder.id, *first), *(GapEdit(None, a, b) for a, b in others)]


async def note_segment(
    store: Store,
    state: StreamState,
    sequence: int,
    start_s: float,
    end_s: float,
    down_after_s: float,
) -> None:
    """Update the stream's gaps for a segment just stored (under the stream's lock)."""
    before, after = await store.segment_neighbours(state.id, sequence, start_s)
    gaps = await store.stream_gaps(state.id)
    for edit in gap_edits(gaps, before, after, start_s, end_s, down_after_s):
        if edit.remove:
            assert edit.gap_id is not None
            await store.delete_stream_gap(edit.gap_id)
            continue
        was_open = any(g.id == edit.gap_id and g.to_s is None for g in gaps)
        await store.save_stream_gap(state.id, edit.gap_id, edit.from_s, edit.to_s)
        if edit.gap_id is None:
            _log_event("stream.down", state, edit.from_s, edit.to_s)
        if edit.gap_id is None or was_open:
            _log_event("stream.up", state, edit.from_s, edit.to_s)
            metrics.STREAM_UP.labels(state.name).set(1)


async def detect_down_streams(
    store: Store, down_after_s: float, now: datetime | None = None
) -> list[str]:
    """Open a gap for every stream whose audio is known only up to more than `down_after_s`
    ago; the names of the streams found down now."""
    now = now or datetime.now(UTC)
    open_streams = {g.stream_id for g in await store.stream_gaps() if g.to_s is None}
    down = []
    for state in await store.list_streams():
        if state.id in open_streams:
            metrics.STREAM_UP.labels(state.name).set(0)
            continue
        metrics.STREAM_UP.labels(state.name).set(1)
        if (now - wall_clock(state.wall_origin, state.max_end_s)).total_seconds() < down_after_s:
            continue
        async with store.stream_lock(state.name):
            fresh = await store.get_stream(state.name)  # a segment may have come in since
            if fresh is None or (
                (now - wall_clock(fresh.wall_origin, fresh.max_end_s)).total_seconds()
                < down_after_s
            ):
                continue
            if await store.open_stream_gap(fresh.id, fresh.max_end_s):
                _log_event("stream.down", fresh, fresh.max_end_s, None)
                metrics.STREAM_UP.labels(fresh.name).set(0)
                down.append(fresh.name)
    return down


def gap_document(gap: StreamGap, state: StreamState, now: datetime | None = None) -> dict[str, Any]:
    """A gap as the API and the SNS events show it: wall clock from/to (to null while the
    stream is down) and its duration (so far)."""
    start = wall_clock(state.wall_origin, gap.from_s)
    end = None if gap.to_s is None else wall_clock(state.wall_origin, gap.to_s)
    duration_s = ((end or now or datetime.now(UTC)) - start).total_seconds()
    return {
        "from": start,
        "to": end,
        "duration_s": round(max(0.0, duration_s), 3),
        "stream_from_s": round(gap.from_s, 3),
        "stream_to_s": None if gap.to_s is None else round(gap.to_s, 3),
    }


def event_payload(event: str, gap: StreamGap, state: StreamState) -> dict[str, Any]:
    """The SNS message of a stream.down or stream.up event."""
    doc = gap_document(gap, state)
    iso = {
        k: v.isoformat().replace("+00:00", "Z") if isinstance(v, datetime) else v
        for k, v in doc.items()
    }
    return {"event_type": event, "stream": state.name, "gap_id": gap.id, "gap": iso}


def _log_event(event: str, state: StreamState, from_s: float, to_s: float | None) -> None:
    metrics.STREAM_HEALTH_EVENTS.labels(event).inc()
    start = wall_clock(state.wall_origin, from_s)
    log.warning(
        "%s: %s (audio missing from %s)",
        state.name,
        event,
        start.isoformat(),
        extra={
            "event": event,
            "stream": state.name,
            "gap_from": start.isoformat(),
            "gap_to": None if to_s is None else wall_clock(state.wall_origin, to_s).isoformat(),
        },
    )


#: Sends one stream.down / stream.up message (the SNS topic's publish, in the worker).
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def publish_gap_events(store: Store, send: Send, down_after_s: float) -> int:
    """Send the stream.down and stream.up events due and not yet sent, a gap's down before
    its up, each marked sent once it went out (under the stream's lock, so two workers do not
    both send it); how many went out. A gap found on arrival is due once the stream's head is
    `down_after_s` past its end."""
    pending = await store.pending_gap_events()
    if not pending:
        return 0
    streams = {s.id: s for s in await store.list_streams()}
    sent = 0
    for stream_id in sorted({g.stream_id for g in pending}):
        state = streams.get(stream_id)
        if state is None:
            continue
        async with store.stream_lock(state.name):
            state = await store.get_stream(state.name) or state
            for gap in await store.pending_gap_events():
                if gap.stream_id != stream_id:
                    continue
                settling = gap.to_s is not None and state.max_end_s < gap.to_s + down_after_s
                if not gap.down_published and settling:
                    continue
                for event, due in (
                    ("down", not gap.down_published),
                    ("up", gap.to_s is not None and not gap.up_published),
                ):
                    if due:
                        await send(event_payload(f"stream.{event}", gap, state))
                        await store.mark_gap_published(gap.id, event)  # type: ignore[arg-type]
                        sent += 1
    return sent

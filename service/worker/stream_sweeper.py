"""The worker's periodic stream chores, which no segment arrival triggers.

- A stream that stops sending segments (channel stopped, network down) must still end its
  current play: after STREAM_PLAY_END_TIMEOUT_S without a segment it gets `play.ended`.
- A stream whose audio stopped STREAM_DOWN_AFTER_S ago is down: its outage opens, and
  stream.down goes out (core/streams/health.py); the running sweepers of every worker share
  this, and the store opens each outage once.
- Plays waiting for a segment that never came are announced or ended after
  STREAM_ANNOUNCE_SETTLE_S (core/streams/announce.py).
- Play events left in the outbox (SNS failed, or the worker died before sending) go out, and
  so do stream.down / stream.up events.
- Segment peaks and window matches older than STREAM_RETENTION_S are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from service.core.streams.health import detect_down_streams
from service.core.streams.segment import (
    StreamParams,
    end_idle_plays,
    prune_streams,
    settle_streams,
)
from service.store import Store
from service.worker.ports import EventPublisher

log = logging.getLogger(__name__)

#: Pruning deletes rows, which needs doing far less often than the other chores.
_PRUNE_EVERY = 30


class StreamSweeper:
    def __init__(
        self,
        store: Store,
        events: EventPublisher | None,
        params: StreamParams,
        *,
        play_end_timeout_s: float,
        interval_s: float,
    ) -> None:
        self._store = store
        self._events = events
        self._params = params
        self._timeout_s = play_end_timeout_s
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self._sweeps = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="stream-sweeper")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def sweep(self) -> None:
        """One round of the chores."""
        ended = await end_idle_plays(self._store, self._timeout_s)
        if ended:
            log.info("ended the current play of idle stream(s) %s", ", ".join(ended))
        await detect_down_streams(self._store, self._params.down_after_s)
        settled = await settle_streams(self._store, self._params)
        if settled:
            log.info("settled plays missing segments on stream(s) %s", ", ".join(settled))
        if self._events is not None:
            await self._events.publish_stream_events(self._store)
        if self._sweeps % _PRUNE_EVERY == 0:
            dropped = await prune_streams(self._store, self._params)
            if dropped:
                log.info("pruned %d old stream segment(s)", dropped)
        self._sweeps += 1

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception as exc:  # the database or SNS is down: try again next round
                log.warning("stream sweep failed: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(self._interval_s)

"""Putting the worker together: handler + poller + stream sweeper, in `serve` or on its own.

`running_worker` is the one assembly both hosts use: the API process (service/hosts.py passes
`start_in_api` to the API when SQS_QUEUE_URL is set and RUN_WORKER_IN_API is true) and
`song-detection worker`, which adds signal handling and the health endpoint (`run_worker`).
Both open the store, the CPU pool and the AWS clients through service/resources.py, which
hands the worker its outside world as the Protocols of service/worker/ports.py.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from service.core.streams.log import LogParams
from service.core.streams.segment import StreamParams
from service.resources import Resources
from service.settings import Settings
from service.startup import started_in_background
from service.tempfiles import sweep_orphans
from service.worker.handlers import ObjectHandler
from service.worker.health import start_health_server, worker_probe
from service.worker.poller import SqsPoller
from service.worker.stream_sweeper import StreamSweeper

log = logging.getLogger(__name__)

__all__ = ["run_worker", "running_worker", "start_in_api", "stream_params_of"]


@asynccontextmanager
async def running_worker(
    settings: Settings, resources: Resources, **poller_options: Any
) -> AsyncIterator[SqsPoller]:
    """The poller running as a background task for the duration of the block; leaving it
    stops receiving, drains in-flight messages within WORKER_SHUTDOWN_GRACE_S and releases the
    rest (the AWS clients are closed with the other resources). `poller_options` override
    SqsPoller's defaults."""
    if not settings.sqs_queue_url:
        raise ValueError("SQS_QUEUE_URL is not set")
    if resources.pool is None:
        raise ValueError("the worker needs the resources opened with a CPU pool")
    io, store = resources.worker_io(settings), resources.store
    stream_params = stream_params_of(settings)
    handler = ObjectHandler(
        store=store,
        pool=resources.pool,
        parse=io.parse,
        objects=io.objects,
        reports=io.reports,
        events=io.events,
        match_params=resources.match_params,
        fp_params=resources.fp_params,
        bucket=settings.s3_bucket,
        stream_params=stream_params,
        max_index_audio_s=settings.max_index_audio_s,
        max_identify_audio_s=settings.max_identify_audio_s,
    )
    sweeper = StreamSweeper(
        store,
        io.events,
        stream_params,
        play_end_timeout_s=settings.stream_play_end_timeout_s,
        interval_s=settings.stream_sweep_interval_s,
    )
    options: dict[str, Any] = {
        "concurrency": settings.worker_concurrency,
        "batch_size": settings.sqs_batch_size,
        "wait_s": settings.sqs_wait_s,
        "visibility_timeout_s": settings.sqs_visibility_timeout_s,
        "shutdown_grace_s": settings.worker_shutdown_grace_s,
    }
    poller = SqsPoller(io.sqs, settings.sqs_queue_url, handler, **{**options, **poller_options})
    poller.start()
    sweeper.start()
    log.info(
        "polling %s (%d at a time, bucket %s, topic %s)",
        settings.sqs_queue_url,
        poller.concurrency,
        settings.s3_bucket or "any",
        settings.sns_topic_arn or "none",
    )
    try:
        yield poller
    finally:
        await sweeper.stop()
        await poller.stop()


async def start_in_api(
    settings: Settings, resources: Resources, stack: AsyncExitStack
) -> Callable[[], dict[str, Any]]:
    """The poller inside the API process, sharing its resources; it stops before they close.
    Returns its status (counters, health) for the API's /readyz."""
    poller = await stack.enter_async_context(running_worker(settings, resources))
    return poller.status


def stream_params_of(settings: Settings) -> StreamParams:
    return StreamParams(
        segment_s=settings.stream_segment_s,
        retention_s=settings.stream_retention_s,
        speed_search=settings.stream_speed_search,
        down_after_s=settings.stream_down_after_s,
        log=LogParams(settle_s=settings.stream_announce_settle_s),
    )


async def run_worker(settings: Settings) -> int:
    """`song-detection worker`: poll until SIGTERM or SIGINT, then shut down cleanly; 0.

    The health endpoint and the signal handlers come first, the store and the CPU pool open
    behind them (service/startup.py): a SIGTERM while migrations run or wait for another
    replica's lock cancels the start-up and exits 0 at once. 1 when start-up fails or the poller
    ends by itself."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    sweep_orphans()  # downloads a killed predecessor left behind
    poller: SqsPoller | None = None
    status = 0
    health = None
    try:
        async with started_in_background(settings, aws=True) as startup:
            if settings.worker_health_port:
                health = await start_health_server(
                    worker_probe(startup, lambda: poller),
                    settings.host,
                    settings.worker_health_port,
                    startup,
                )
            if await _first(stop.wait(), startup.settled()) == 0:
                log.info("stopped during start-up")
                return 0
            if startup.opened is None:
                return 1
            async with running_worker(settings, startup.opened) as poller:
                loop_task = poller.start()
                await _first(stop.wait(), loop_task)
                if loop_task.done() and not stop.is_set():
                    log.error("the SQS poller ended unexpectedly: %r", loop_task.exception())
                    status = 1
                log.info("stopping the worker")
            log.info("worker stopped")
    finally:
        # Leaving the block above waited for an analysis already running in a CPU process
        # (queued ones are dropped) and closed the store.
        if health is not None:
            health.close()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    return status


async def _first(*awaitables: Awaitable[Any]) -> int:
    """Index of the first of `awaitables` to finish; the others are cancelled (tasks passed in
    are left running)."""
    futures = [asyncio.ensure_future(a) for a in awaitables]
    done, _ = await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
    for future, awaitable in zip(futures, awaitables, strict=True):
        if future is not awaitable and not future.done():
            future.cancel()
    return next(i for i, f in enumerate(futures) if f in done)

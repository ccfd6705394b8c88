"""Opening the resources (service/resources.py) in the background of a running process.

`serve` and `worker` start their probes first and open what they need behind them, so that an
orchestrator sees a live process from its first second: `/healthz` answers 200 while migrations
run or wait for another replica's advisory lock, readiness answers 503 until they are done, and
SIGTERM meanwhile cancels the start-up and exits at once instead of after the lock is granted.

An unreachable database is retried (it may be starting too, or a failover may be under way);
anything else (a failing migration, an index made with other parameters) fails the start-up for
good: health then answers 503 with the reason, and the orchestrator replaces the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

from service.audio.params import DEFAULT_PARAMS, FingerprintParams, params_for_format
from service.errors import StoreUnavailable
from service.match import MatchParams
from service.resources import PoolSpec, Resources, enter_resources, match_params_of
from service.settings import Settings
from service.store import Store

log = logging.getLogger(__name__)

Phase = Literal["starting", "ready", "failed"]

#: Waits between attempts to reach an unreachable database: doubling up to the last.
RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0)


class Startup:
    """The state of a background start-up: `phase`, a human `detail`, and `opened` once
    ready; with the `settings` it started from and the matcher's parameters they choose, which
    the API's routes read before the store is open (the API key) and after."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings
        self.match_params: MatchParams | None = (
            None if settings is None else match_params_of(settings)
        )
        self.fp_params: FingerprintParams = (
            DEFAULT_PARAMS if settings is None else params_for_format(settings.fingerprint_format)
        )
        self.phase: Phase = "starting"
        self.detail = "opening the database and applying pending migrations"
        self.opened: Resources | None = None
        #: The in-process SQS poller's status, when the API runs one.
        self.worker_status: StatusProbe | None = None
        self._settled = asyncio.Event()

    @property
    def ready(self) -> bool:
        return self.phase == "ready"

    @property
    def failed(self) -> bool:
        return self.phase == "failed"

    async def settled(self) -> Phase:
        """Wait until start-up is ready or has failed; the phase it ended in."""
        await self._settled.wait()
        return self.phase

    def _ready(self, opened: Resources) -> None:
        self.opened, self.phase, self.detail = opened, "ready", "ready"
        self._settled.set()

    def _fail(self, detail: str) -> None:
        self.phase, self.detail = "failed", detail
        self._settled.set()


#: What a component started in the process (the SQS poller) says about itself right now.
StatusProbe = Callable[[], dict[str, Any]]

#: Called once the store and the pool are open; it may enter more contexts (the SQS poller)
#: on the stack, which closes them before the pool and the store, and return their status.
OnReady = Callable[[Resources, contextlib.AsyncExitStack], Awaitable[StatusProbe | None]]


@contextlib.asynccontextmanager
async def started_in_background(
    settings: Settings, on_ready: OnReady | None = None, *, aws: bool = False
) -> AsyncIterator[Startup]:
    """Open the resources (service/resources.py: the store, migrating if MIGRATE_ON_START, the
    warmed CPU pool and, with `aws`, the AWS clients) in a background task while the block
    runs; leaving the block cancels a start-up still under way and closes whatever was opened,
    in reverse order."""
    startup = Startup(settings)
    stack = contextlib.AsyncExitStack()

    async def open_with_retry(store: Store) -> None:
        await _open_with_retry(store, startup)

    async def start() -> None:
        opened = await enter_resources(
            stack,
            settings,
            pool=PoolSpec(
                settings.effective_cpu_workers, warm_up=True, queue_max=settings.cpu_queue_max
            ),
            aws=aws,
            open_store=open_with_retry,
        )
        if on_ready is not None:
            startup.worker_status = await on_ready(opened, stack)
        startup._ready(opened)
        assert opened.pool is not None
        log.info(
            "ready: store %s, %d CPU workers", type(opened.store).__name__, opened.pool.workers
        )

    async def run() -> None:
        try:
            await start()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("start-up failed")
            startup._fail(f"start-up failed: {exc}")

    task = asyncio.create_task(run(), name="startup")
    try:
        yield startup
    finally:
        if not task.done():
            log.info("stopping during start-up: %s", startup.detail)
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await stack.aclose()


async def _open_with_retry(store: Store, startup: Startup) -> None:
    for attempt in itertools.count():
        try:
            await store.open()
            return
        except StoreUnavailable as exc:
            delay_s = RETRY_DELAYS_S[min(attempt, len(RETRY_DELAYS_S) - 1)]
            startup.detail = f"database unavailable, retrying: {exc}"
            log.warning("database unavailable, retrying in %.1f s: %s", delay_s, exc)
            await asyncio.sleep(delay_s)

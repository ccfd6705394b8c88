"""A bounded pool of processes for decoding and fingerprinting, which survives a dead child.

Decoding and the STFT are CPU-bound; running them in separate processes keeps the event loop
(and health checks) responsive and uses every core, which threads would not under the GIL.
Processes are spawned, not forked, so they never inherit the event loop, sockets or pools.

A child that dies (OOM-killed, `kill -9`, a crash inside FFmpeg) breaks a ProcessPoolExecutor
for good: every later call fails at once. The pool therefore replaces a broken executor with a
new one and runs the call that met the breakage once more; a call that breaks the new one too
(a file that kills its decoder every time) gets CpuPoolUnavailable (503). When a replacement
cannot even start its processes, `healthy` turns False, and the health checks answer 503 so
that the orchestrator replaces the task; the next call tries again.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from service.errors import ServiceError
from service.memory import keep_freed_memory

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How long a new executor's processes get to start and import the analysis modules.
_WARM_UP_TIMEOUT_S = 120.0
#: How often a child checks that the process that started it is still there.
_PARENT_CHECK_S = 1.0


class CpuPoolUnavailable(ServiceError):
    """The analysis processes died, and a replacement could not finish the work either."""

    code = "analysis_unavailable"
    status = 503


def _warm() -> None:
    # Import the heavy modules once per worker so the first request does not pay for it.
    import service.audio.analysis  # noqa: F401


def _exit_with_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(_PARENT_CHECK_S)
    # The service was killed (kill -9, OOM): nobody will collect this process's result, and
    # its queue's pipe never closes (the children hold its write end too), so it would wait
    # for work forever.
    os._exit(0)


def _init_child() -> None:
    keep_freed_memory()
    threading.Thread(
        target=_exit_with_parent, args=(os.getppid(),), name="parent-watch", daemon=True
    ).start()


class CpuPool:
    """Runs picklable functions off the event loop, at most `workers` at a time."""

    def __init__(self, workers: int, use_processes: bool = True) -> None:
        self.workers = max(1, workers)
        self._use_processes = use_processes
        self._executor = self._new_executor()
        #: Bumped with every replacement, so that calls that met the same broken executor
        #: replace it once between them.
        self._generation = 0
        self._replacing: asyncio.Lock | None = None
        #: False while the last replacement of a broken executor failed (see module doc).
        self.healthy = True
        #: Executors replaced since start (health output, tests).
        self.replacements = 0

    def _new_executor(self) -> Executor:
        if not self._use_processes:
            return ThreadPoolExecutor(max_workers=self.workers)
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_child,
        )

    async def warm_up(self) -> None:
        await asyncio.gather(*(self.run(_warm) for _ in range(self.workers)))

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            if not self.healthy:
                await self._replace(self._generation)
            generation = self._generation
            try:
                return await loop.run_in_executor(self._executor, fn, *args)
            except BrokenProcessPool as exc:
                log.error("an analysis process died (%s); starting a new pool", exc)
                await self._replace(generation)
                if attempt == 2:
                    raise CpuPoolUnavailable(
                        "the analysis process died twice while working on this request; retry later"
                    ) from exc
        raise AssertionError("unreachable")

    async def _replace(self, broken_generation: int) -> None:
        if self._replacing is None:
            self._replacing = asyncio.Lock()
        async with self._replacing:
            if self._generation != broken_generation and self.healthy:
                return  # another call replaced it meanwhile
            old = self._executor
            self._generation += 1
            self.replacements += 1
            old.shutdown(wait=False, cancel_futures=True)
            loop = asyncio.get_running_loop()
            try:
                self._executor = self._new_executor()
                warming = [loop.run_in_executor(self._executor, _warm) for _ in range(self.workers)]
                await asyncio.wait_for(asyncio.gather(*warming), _WARM_UP_TIMEOUT_S)
            except Exception as exc:
                self.healthy = False
                log.error("could not start new analysis processes: %r", exc)
                raise CpuPoolUnavailable(
                    "the analysis processes cannot be started; retry later"
                ) from exc
            self.healthy = True
            log.info("analysis pool replaced (%d replacement(s) so far)", self.replacements)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

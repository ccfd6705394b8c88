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

Backpressure: HTTP uploads enter through `admit()`, which refuses (CpuPoolBusy, 503 with
Retry-After) once the work ahead of the pool reaches `workers + queue_max`: the uploads
admitted (from their first byte to their answer) plus the tasks other callers (the SQS
worker, which receives only what it can process) have in the pool. The queue therefore never
grows without bound, and a client learns at once that it should come back.

Each task runs in the child wrapped in `_timed`, which returns how long it computed and when
it started; the parent records both (service/telemetry/metrics.py), so the children record
no metrics themselves.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from functools import partial
from typing import Any, TypeVar

from service.errors import ServiceError
from service.memory import keep_freed_memory
from service.telemetry import metrics

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


class CpuPoolBusy(ServiceError):
    """The pool's queue is full: the upload is refused before it is read."""

    code = "busy"
    status = 503

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


#: Set inside `admit()`: the pool's tasks of an admitted request are already counted.
_ADMITTED: contextvars.ContextVar[bool] = contextvars.ContextVar("cpu_admitted", default=False)

#: Retry-After bounds (s), and the task time assumed before any task has finished.
_RETRY_AFTER_MIN_S, _RETRY_AFTER_MAX_S, _TASK_S_GUESS = 1, 60, 1.0


def _task_name(fn: Callable[..., Any]) -> str:
    while isinstance(fn, partial):
        fn = fn.func
    return getattr(fn, "__name__", "task")


def _timed(fn: Callable[..., T], *args: Any) -> tuple[T, float, float]:
    """In the child: (result, Unix time it started, seconds it computed)."""
    started_at, started = time.time(), time.perf_counter()
    result = fn(*args)
    return result, started_at, time.perf_counter() - started


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

    def __init__(
        self, workers: int, use_processes: bool = True, queue_max: int | None = None
    ) -> None:
        self.workers = max(1, workers)
        #: Work waiting beyond the busy processes that `admit()` still lets in (None: any).
        self.queue_max = queue_max
        self._use_processes = use_processes
        #: Uploads admitted and not yet answered; tasks of other callers in the pool.
        self._admitted = 0
        self._others_in_pool = 0
        #: Tasks submitted and not finished (every caller): busy processes plus queue.
        self._in_pool = 0
        #: Moving average of a task's compute time (s), for Retry-After.
        self._task_s = _TASK_S_GUESS
        metrics.CPU_POOL_QUEUE_LIMIT.set(-1 if queue_max is None else queue_max)
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

    @property
    def busy(self) -> int:
        return min(self._in_pool, self.workers)

    @property
    def queued(self) -> int:
        return max(0, self._in_pool - self.workers)

    @property
    def load(self) -> int:
        """The work ahead of the pool that admission counts."""
        return self._admitted + self._others_in_pool

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Hold a place for one upload's analysis; CpuPoolBusy when the queue is full."""
        if self.queue_max is not None and self.load >= self.workers + self.queue_max:
            waiting = self.load - self.workers + 1
            retry_s = math.ceil(self._task_s * waiting / self.workers)
            raise CpuPoolBusy(
                f"the analysis queue is full ({self.load} uploads and tasks for "
                f"{self.workers} process(es)); retry later",
                max(_RETRY_AFTER_MIN_S, min(_RETRY_AFTER_MAX_S, retry_s)),
            )
        self._admitted += 1
        token = _ADMITTED.set(True)
        try:
            yield
        finally:
            _ADMITTED.reset(token)
            self._admitted -= 1

    def _gauges(self) -> None:
        metrics.record_cpu_pool(self.workers, self.busy, self.queued)

    async def _submit(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        counted = not _ADMITTED.get()
        submitted_at = time.time()
        self._in_pool += 1
        self._others_in_pool += counted
        self._gauges()
        try:
            result, started_at, compute_s = await loop.run_in_executor(
                self._executor, _timed, fn, *args
            )
        finally:
            self._in_pool -= 1
            self._others_in_pool -= counted
            self._gauges()
        metrics.CPU_TASK_SECONDS.labels(_task_name(fn)).observe(compute_s)
        metrics.CPU_WAIT_SECONDS.observe(max(0.0, started_at - submitted_at))
        self._task_s = 0.8 * self._task_s + 0.2 * compute_s
        return result

    async def warm_up(self) -> None:
        await asyncio.gather(*(self.run(_warm) for _ in range(self.workers)))

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        for attempt in (1, 2):
            if not self.healthy:
                await self._replace(self._generation)
            generation = self._generation
            try:
                return await self._submit(fn, *args)
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

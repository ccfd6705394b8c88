"""A bounded pool of processes for decoding and fingerprinting.

Decoding and the STFT are CPU-bound; running them in separate processes keeps the event loop
(and health checks) responsive and uses every core, which threads would not under the GIL.
Processes are spawned, not forked, so they never inherit the event loop, sockets or pools.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, TypeVar

from service.memory import keep_freed_memory

T = TypeVar("T")


def _warm() -> None:
    # Import the heavy modules once per worker so the first request does not pay for it.
    import service.core.analysis  # noqa: F401


class CpuPool:
    """Runs picklable functions off the event loop, at most `workers` at a time."""

    def __init__(self, workers: int, use_processes: bool = True) -> None:
        self.workers = max(1, workers)
        if use_processes:
            self._executor: Executor = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=keep_freed_memory,
            )
        else:
            self._executor = ThreadPoolExecutor(max_workers=self.workers)

    async def warm_up(self) -> None:
        await asyncio.gather(*(self.run(_warm) for _ in range(self.workers)))

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

"""The CPU pool survives dead children: killed ones are replaced, work is retried once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest

from service.executor import CpuPool, CpuPoolUnavailable


def _pid() -> int:
    return os.getpid()


def _sleep_then_pid(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _child_pids(pool: CpuPool) -> list[int]:
    return list(pool._executor._processes)  # type: ignore[attr-defined]


@pytest.fixture
async def pool():
    pool = CpuPool(2)
    await pool.warm_up()
    yield pool
    pool.close()


async def test_a_killed_idle_child_is_replaced_and_the_next_call_succeeds(pool):
    before = _child_pids(pool)
    os.kill(before[0], signal.SIGKILL)
    await asyncio.sleep(0.3)  # the executor notices and marks itself broken
    pid = await pool.run(_pid)
    assert pid not in before
    assert pool.replacements == 1 and pool.healthy


async def test_calls_running_when_a_child_dies_are_retried_once(pool):
    calls = [asyncio.ensure_future(pool.run(_sleep_then_pid, 1.0)) for _ in range(2)]
    await asyncio.sleep(0.3)
    os.kill(_child_pids(pool)[0], signal.SIGKILL)
    pids = await asyncio.gather(*calls)
    assert pool.replacements == 1
    assert set(pids) <= set(_child_pids(pool))


async def test_work_that_kills_its_process_every_time_gets_503_and_the_pool_recovers(pool):
    with pytest.raises(CpuPoolUnavailable) as raised:
        await pool.run(_die)
    assert raised.value.status == 503 and not raised.value.permanent
    assert pool.replacements == 2
    assert await pool.run(_pid) in _child_pids(pool)


async def test_a_pool_that_cannot_be_rebuilt_reports_unhealthy_until_it_can(pool, monkeypatch):
    def cannot_spawn():
        raise OSError(11, "Resource temporarily unavailable")

    os.kill(_child_pids(pool)[0], signal.SIGKILL)
    await asyncio.sleep(0.3)
    monkeypatch.setattr(pool, "_new_executor", cannot_spawn)
    with pytest.raises(CpuPoolUnavailable, match="cannot be started"):
        await pool.run(_pid)
    assert not pool.healthy
    with pytest.raises(CpuPoolUnavailable):
        await pool.run(_pid)
    monkeypatch.undo()
    assert await pool.run(_pid) in _child_pids(pool)
    assert pool.healthy


_ORPHAN_SCRIPT = """
import asyncio, sys
from service.executor import CpuPool
async def main():
    pool = CpuPool(2)
    await pool.warm_up()
    print(" ".join(map(str, pool._executor._processes)), flush=True)
    await asyncio.sleep(600)
asyncio.run(main())
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_children_exit_when_the_service_is_killed():
    service = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN_SCRIPT], stdout=subprocess.PIPE, text=True
    )
    try:
        children = [int(p) for p in service.stdout.readline().split()]
        assert len(children) == 2 and all(_alive(p) for p in children)
        service.kill()
        service.wait(10)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(p) for p in children)
    finally:
        service.kill()

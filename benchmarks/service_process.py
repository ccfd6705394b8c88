"""The real service (`song-detection serve`) in a subprocess, for benchmarks that talk HTTP.

Latency measured through uvicorn, the upload path, the process pool and the asyncpg pool is
what a client waits for; an in-process call would skip half of it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class ServiceSpec:
    """How to start one service process for a benchmark.

    `cpus` pins the server and its process pool (children inherit the affinity) with taskset.
    `module` is the entry point run with `serve` (another one wraps service.cli's); `log_path`
    receives the service's log lines (None leaves them on this process's stdout and stderr).
    """

    database_url: str
    cpu_workers: int = 0
    cpus: str | None = None
    extra_env: Mapping[str, str] = field(default_factory=dict)
    ready_timeout_s: float = 120.0
    module: str = "service.cli"
    log_path: Path | None = None


@contextmanager
def running_service(spec: ServiceSpec) -> Iterator[str]:
    """Yield the base URL of a service started as `spec` says, ready (`/readyz` 200) and warm."""
    with running_service_process(spec) as (base, _pid):
        yield base


@contextmanager
def running_service_process(spec: ServiceSpec) -> Iterator[tuple[str, int]]:
    """As running_service, yielding the base URL and the service's process id (taskset
    execs the service in its own process)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "DB_"))}
    env.update(
        DATABASE_URL=spec.database_url,
        CPU_WORKERS=str(spec.cpu_workers),
        LOG_LEVEL="WARNING",
        COMPACT_DELTA_ROWS="0",
    )
    env.update(spec.extra_env)
    command = [sys.executable, "-m", spec.module, "serve", "--port", str(port)]
    if spec.cpus is not None:
        command = ["taskset", "-c", spec.cpus, *command]
    log = None if spec.log_path is None else spec.log_path.open("wb")
    proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + spec.ready_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"service exited with {proc.returncode}")
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("service did not become ready")
            time.sleep(0.3)
        yield base, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log is not None:
            log.close()

"""Start-up as an orchestrator sees it, with the real CLI processes and a real PostgreSQL.

Another replica is simulated by holding the migration advisory lock from the test: `serve` and
`worker` (MIGRATE_ON_START=true, a database never migrated) must answer their health check at
once, stay not-ready while they wait, become ready when the lock is released, and exit promptly
and cleanly on SIGTERM while still waiting (ECS's 30 s stop timeout must never be reached).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from service.store.postgres import MIGRATION_LOCK_KEY
from tests.aws_fixtures import free_port

ROOT = Path(__file__).resolve().parents[2]
#: Far below ECS's and `docker stop`'s 30 s between SIGTERM and SIGKILL.
PROMPT_EXIT_S = 10.0


class LockHolder:
    """A connection on its own thread-free loop holding the migration lock, as a replica that
    is migrating would."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.runner = asyncio.Runner(loop_factory=asyncio.new_event_loop)
        self.conn: asyncpg.Connection | None = None

    def __enter__(self) -> LockHolder:
        async def take() -> None:
            self.conn = await asyncpg.connect(self.url)
            await self.conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)

        self.runner.run(take())
        return self

    def release(self) -> None:
        if self.conn is not None:
            self.runner.run(self.conn.close())
            self.conn = None

    def __exit__(self, *exc: object) -> None:
        self.release()
        self.runner.close()


def start(command: str, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "service.cli", command],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def base_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DB_"))}
    env.update(
        DATABASE_URL=database_url,
        MIGRATE_ON_START="true",
        CPU_WORKERS="1",
        LOG_LEVEL="INFO",
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
    )
    return env


def poll(url: str, until: int, process: subprocess.Popen[bytes], log: Path) -> httpx.Response:
    """GET `url` until it answers `until`, while `process` keeps running."""
    deadline = time.monotonic() + 60
    while True:
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == until:
                return response
        except httpx.TransportError:
            pass
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"{url} never answered {until}: {log.read_text()}"
        time.sleep(0.1)


def stop_promptly(process: subprocess.Popen[bytes], log: Path) -> None:
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=PROMPT_EXIT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {PROMPT_EXIT_S} s after SIGTERM:\n{log.read_text()}")
    # uvicorn re-raises the SIGTERM it caught once it has shut down, so `serve` ends by the
    # signal (143 under an init process); the worker returns 0.
    assert code in (0, -signal.SIGTERM), log.read_text()[-3000:]
    text = log.read_text()
    assert "Application shutdown complete" in text or "stopped during start-up" in text, text
    assert time.monotonic() - started < PROMPT_EXIT_S


def test_serve_answers_at_once_and_waits_for_another_replicas_migrations(
    pg_empty_url: str, tmp_path: Path, procs: list
) -> None:
    port = free_port()
    env = base_env(pg_empty_url, tmp_path) | {"HOST": "127.0.0.1", "PORT": str(port)}
    log = tmp_path / "serve.log"
    base = f"http://127.0.0.1:{port}"
    with LockHolder(pg_empty_url) as lock:
        procs.append(process := start("serve", env, log))
        started = time.monotonic()
        assert poll(f"{base}/healthz", 200, process, log).json() == {"status": "ok"}
        assert time.monotonic() - started < 30, "the port waited for start-up"
        # Still waiting on the lock: not ready, and routes that need the store say why.
        time.sleep(1.0)
        ready = httpx.get(f"{base}/readyz", timeout=5)
        assert ready.status_code == 503
        assert ready.json()["error"]["code"] == "not_ready"
        assert int(ready.headers["Retry-After"]) > 0
        songs = httpx.get(f"{base}/songs", timeout=5)
        assert songs.status_code == 503 and songs.json()["error"]["code"] == "not_ready"
        lock.release()
        assert poll(f"{base}/readyz", 200, process, log).json() == {"status": "ready"}
    assert httpx.get(f"{base}/songs", timeout=5).json()["total"] == 0
    stop_promptly(process, log)


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_sigterm_while_waiting_for_the_migration_lock_exits_promptly(
    pg_empty_url: str, tmp_path: Path, procs: list, moto_url: str, command: str
) -> None:
    port = free_port()
    env = base_env(pg_empty_url, tmp_path) | {
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WORKER_HEALTH_PORT": str(port),
        # The worker needs a queue in its settings; it is never reached before SIGTERM.
        "SQS_QUEUE_URL": f"{moto_url}/123456789012/never-polled",
        "AWS_ENDPOINT_URL": moto_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "RUN_WORKER_IN_API": "false",
    }
    log = tmp_path / f"{command}.log"
    with LockHolder(pg_empty_url):
        procs.append(process := start(command, env, log))
        health = poll(f"http://127.0.0.1:{port}/healthz", 200, process, log).json()
        if command == "worker":
            assert health["status"] == "starting"
        time.sleep(1.0)  # well inside pg_advisory_lock by now
        assert process.poll() is None
        stop_promptly(process, log)

    # Nothing was applied: the waiting replica gave up its turn.
    async def applied() -> object:
        conn = await asyncpg.connect(pg_empty_url)
        try:
            return await conn.fetchval("SELECT to_regclass('schema_migrations')")
        finally:
            await conn.close()

    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        assert runner.run(applied()) is None


def test_unreachable_database_is_retried_and_failed_start_up_is_unhealthy(
    tmp_path: Path, procs: list, pg_empty_url: str
) -> None:
    """A database that is not up yet keeps the process live and unready; a migration that
    cannot succeed turns its health check to 503 so the orchestrator replaces it."""
    port = free_port()
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/songs"
    env = base_env(dead, tmp_path) | {"HOST": "127.0.0.1", "PORT": str(port)}
    log = tmp_path / "serve.log"
    procs.append(process := start("serve", env, log))
    base = f"http://127.0.0.1:{port}"
    poll(f"{base}/healthz", 200, process, log)
    time.sleep(1.5)
    ready = httpx.get(f"{base}/readyz", timeout=5)
    assert ready.status_code == 503 and "retrying" in ready.json()["error"]["message"]
    assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
    stop_promptly(process, log)

    broken = tmp_path / "migrations"
    (broken / "postgres").mkdir(parents=True)
    (broken / "postgres" / "0001_broken.sql").write_text("CREATE TABLE oops (;\n")
    port = free_port()
    env = base_env(pg_empty_url, tmp_path) | {
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "MIGRATIONS_DIR": str(broken),
    }
    log = tmp_path / "serve-broken.log"
    procs.append(process := start("serve", env, log))
    failed = poll(f"http://127.0.0.1:{port}/healthz", 503, process, log).json()
    assert failed["error"]["code"] == "start_failed"
    stop_promptly(process, log)

"""Faults an operator meets: dead analysis processes and a database that stops answering.

Each runs against a real server. The database here is a private PostgreSQL cluster, because
the test stops it with SIGSTOP; the shared server is never touched.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest

from service.audio.params import DEFAULT_PARAMS
from service.errors import StoreUnavailable
from service.executor import CpuPool
from service.resources import Resources
from service.settings import Settings
from service.startup import Startup
from service.store.postgres import PostgresStore
from service.worker.health import start_health_server, worker_probe
from tests.conftest import LiveServer
from tests.private_pg import PrivateCluster, private_cluster, wait_until

MUSIC = Path(__file__).parents[1] / "data" / "music"


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import subprocess

    path = tmp_path_factory.mktemp("clip") / "clip.mp3"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-ss", "2", "-t", "6",
         "-i", str(MUSIC / "nebula.ogg"), str(path)],
        check=True,
    )  # fmt: skip
    return path


def _identify(client: httpx.Client, clip: Path) -> httpx.Response:
    with clip.open("rb") as f:
        return client.post("/identify", files={"file": (clip.name, f)})


def _pool(live: LiveServer) -> CpuPool:
    return live.app.state.startup.opened.pool


def _children(pool: CpuPool) -> list[int]:
    return list(pool._executor._processes)  # type: ignore[attr-defined]


@pytest.fixture
def server(sqlite_url: str) -> Iterator[LiveServer]:
    settings = Settings(database_url=sqlite_url, cpu_workers=2, environment="test")
    with LiveServer(settings) as live:
        yield live


def test_a_killed_analysis_process_is_replaced_and_requests_keep_succeeding(server, clip):
    pool = _pool(server)
    with server.client() as client:
        assert _identify(client, clip).status_code == 200
        # Killed while idle: the next request finds the pool broken and gets a new one.
        os.kill(_children(pool)[0], signal.SIGKILL)
        time.sleep(0.3)
        r = _identify(client, clip)
        assert r.status_code == 200, r.text
        assert pool.replacements == 1
        # Killed while requests run: each is retried once on the replacement.
        results: list[httpx.Response] = []

        def post() -> None:
            with server.client() as c:
                results.append(_identify(c, clip))

        threads = [threading.Thread(target=post) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(0.15)
        for pid in _children(pool):
            os.kill(pid, signal.SIGKILL)
        for t in threads:
            t.join(60)
        assert [r.status_code for r in results] == [200, 200, 200], [r.text for r in results]
        assert client.get("/readyz").status_code == 200
        assert client.get("/healthz").status_code == 200


def test_a_pool_that_cannot_be_rebuilt_fails_the_probes_until_it_can(server, clip, monkeypatch):
    pool = _pool(server)
    with server.client() as client:

        def cannot_spawn():  # as when the task is out of memory or processes
            raise OSError(12, "Cannot allocate memory")

        monkeypatch.setattr(pool, "_new_executor", cannot_spawn)
        os.kill(_children(pool)[0], signal.SIGKILL)
        time.sleep(0.3)
        r = _identify(client, clip)
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "analysis_unavailable"
        for probe in ("/readyz", "/healthz"):
            r = client.get(probe)
            assert r.status_code == 503 and "analysis processes" in r.json()["error"]["message"]
        monkeypatch.undo()
        assert _identify(client, clip).status_code == 200
        assert client.get("/readyz").status_code == 200
        assert client.get("/healthz").status_code == 200


class _Poller:
    """What the health server reads of a poller that receives normally."""

    def healthy(self) -> bool:
        return True

    def status(self) -> dict[str, object]:
        return {"status": "ok", "in_flight": 0}


async def test_the_worker_health_check_fails_while_its_pool_is_broken():
    pool = CpuPool(1, use_processes=False)
    startup = Startup()
    startup._ready(
        Resources(store=None, pool=pool, match_params=None, fp_params=DEFAULT_PARAMS)  # type: ignore[arg-type]
    )
    probe = worker_probe(startup, lambda: _Poller())  # type: ignore[arg-type,return-value]
    server = await start_health_server(probe, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            r = await client.get("/healthz")
            assert r.status_code == 200 and r.json()["cpu_pool"] == "ok"
            pool.healthy = False
            r = await client.get("/healthz")
            assert r.status_code == 503
            assert r.json()["cpu_pool"] == "broken" and r.json()["status"] == "unhealthy"
    finally:
        server.close()
        pool.close()


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    with private_cluster() as pg:
        yield pg


def test_a_stalled_database_answers_503_within_the_stall_timeout_and_recovers(cluster, clip):
    stall_s = 1.0
    settings = Settings(
        database_url=cluster.dsn, cpu_workers=1, environment="test", db_stall_timeout_s=stall_s
    )
    with LiveServer(settings) as live, live.client() as client:
        assert client.get("/songs").status_code == 200
        cluster.freeze()
        try:
            for method, path in [
                ("GET", "/readyz"),
                ("GET", "/songs"),
                ("GET", "/songs/1"),
                ("DELETE", "/songs/1"),
                ("POST", "/identify"),
                ("GET", "/readyz"),
            ]:
                started = time.monotonic()
                is_upload = path == "/identify"
                r = _identify(client, clip) if is_upload else client.request(method, path)
                elapsed_s = time.monotonic() - started
                assert r.status_code == 503, (path, r.text)
                assert r.json()["error"]["code"] in {"store_unavailable", "not_ready"}
                # A pool acquire or statement, then the connection's release: each bounded.
                assert elapsed_s < 2 * stall_s + 1.5, (path, elapsed_s)
            assert client.get("/healthz").status_code == 200  # the process itself is fine
        finally:
            cluster.thaw()
        assert wait_until(lambda: client.get("/readyz").status_code == 200, timeout_s=20)
        assert client.get("/songs").status_code == 200


class _ReleaseFails:
    """A pool whose connections fail on release, as in a fast shutdown."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    def acquire(self, timeout: float | None = None):
        @asynccontextmanager
        async def acquired():
            async with self._pool.acquire(timeout=timeout) as conn:
                yield conn
            raise asyncpg.InternalClientError("cannot release the connection: it was lost")

        return acquired()


async def test_client_errors_that_mean_the_database_is_gone_are_store_unavailable(pg_url):
    store = PostgresStore(pg_url, "v-test", stall_timeout_s=2.0)
    await store.open()
    try:
        assert await store.get_song(1) is None
        pool = store._pool
        assert pool is not None
        store._pool = _ReleaseFails(pool)  # type: ignore[assignment]
        with pytest.raises(StoreUnavailable):
            await store.get_song(1)
        store._pool = pool
        pool.terminate()  # "pool is closed": an InterfaceError
        with pytest.raises(StoreUnavailable):
            await store.get_song(1)
        # Arguments a column cannot hold are not an outage: the stores refuse them first.
        store._pool = None
        assert await store.get_song(1 << 40) is None
    finally:
        store._pool = None
        await store.close()

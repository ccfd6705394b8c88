"""Lookups on a real PostgreSQL streaming replica, writes on the primary.

A private primary and a hot standby (pg_basebackup -R, another port) run for the module; the
store is configured as the service configures it (DATABASE_URL + DATABASE_READ_URL, through
create_store). Pausing the standby's WAL replay shows where each read goes: what the replica
has not replayed is invisible to lookups and found by the catalogue API at once.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import httpx
import numpy as np
import pytest

from service.errors import StoreUnavailable
from service.settings import Settings
from service.store import Store, create_store
from tests.conftest import LiveServer
from tests.integration.test_store import VERSION, make_fingerprints, make_song
from tests.private_pg import (
    PrivateCluster,
    PrivateStandby,
    have_server_binaries,
    streaming_replica,
    wait_until,
)

pytestmark = pytest.mark.skipif(
    not have_server_binaries("initdb", "pg_ctl", "pg_basebackup"),
    reason="the PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup) are not installed",
)

REPLAY_WAIT_S = 10.0
MUSIC = Path(__file__).parents[1] / "data" / "music"


@pytest.fixture(scope="module")
def replicated() -> Iterator[tuple[PrivateCluster, PrivateStandby]]:
    with streaming_replica() as pair:
        yield pair


@asynccontextmanager
async def opened(
    primary: PrivateCluster, standby: PrivateStandby, **overrides
) -> AsyncIterator[Store]:
    values = {
        "database_url": primary.dsn,
        "database_read_url": standby.dsn,
        "environment": "test",
        "db_pool_min_size": 1,
        "db_pool_max_size": 2,
        **overrides,
    }
    store = create_store(Settings(**values), VERSION)  # type: ignore[arg-type]
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def _sql(dsn: str, statement: str):
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(statement)
    finally:
        await conn.close()


def _reachable(dsn: str) -> bool:
    try:
        asyncio.run(_sql(dsn, "SELECT 1"))
    except (OSError, asyncpg.PostgresError):
        return False
    return True


async def _found(store: Store, hashes: np.ndarray, song_id: int) -> bool:
    hits = await store.lookup(hashes)
    return bool(np.any(hits.song_ids == song_id))


async def _wait_found(store: Store, hashes: np.ndarray, song_id: int) -> float:
    """Seconds until a lookup finds `song_id`; fails after REPLAY_WAIT_S."""
    started = time.monotonic()
    while time.monotonic() - started < REPLAY_WAIT_S:
        if await _found(store, hashes, song_id):
            return time.monotonic() - started
        await asyncio.sleep(0.002)
    pytest.fail(f"song {song_id} not found through the replica within {REPLAY_WAIT_S} s")


async def test_the_standby_is_a_replica(replicated) -> None:
    primary, standby = replicated
    assert await _sql(standby.dsn, "SELECT pg_is_in_recovery()") is True
    assert await _sql(primary.dsn, "SELECT count(*) FROM pg_stat_replication") == 1


async def test_a_song_indexed_on_the_primary_is_found_through_the_replica_once_replayed(
    replicated,
) -> None:
    primary, standby = replicated
    async with opened(primary, standby) as store:
        try:
            await _indexed_on_the_primary_found_on_the_replica(store, standby)
        finally:
            await _sql(standby.dsn, "SELECT pg_wal_replay_resume()")


async def _indexed_on_the_primary_found_on_the_replica(
    store: Store, standby: PrivateStandby
) -> None:
    rng = np.random.default_rng(1)
    fp = make_fingerprints(rng, 3000)
    # Replay paused: the replica holds none of what the primary commits from here on.
    await _sql(standby.dsn, "SELECT pg_wal_replay_pause()")
    song, created = await store.add_song(make_song(fp, "replica-1"))  # a write: the primary
    assert created
    # The catalogue API reads the primary: the new song is there at once...
    assert (await store.get_song(song.id)).title == "A Song"
    assert [s.id for s in (await store.list_songs(10, 0)).items] == [song.id]
    # ...while lookups, on the replica, do not see it yet.
    assert not await _found(store, fp.hashes, song.id)
    assert await store.get_songs([song.id]) == {}
    await _sql(standby.dsn, "SELECT pg_wal_replay_resume()")
    await _wait_found(store, fp.hashes, song.id)
    hits = await store.lookup(fp.hashes)
    assert np.count_nonzero(hits.song_ids == song.id) == len(np.unique(fp.hashes))
    assert (await store.get_songs([song.id]))[song.id].title == "A Song"

    # Compaction (a write, on the primary) moves the song into the postings; once replayed,
    # the replica's lookups return the same hits from there.
    result = await store.compact()
    assert result.fingerprints == len(np.unique(fp.hashes))
    deadline = time.monotonic() + REPLAY_WAIT_S
    while await _sql(standby.dsn, "SELECT count(*) FROM fingerprints") and (
        time.monotonic() < deadline
    ):
        await asyncio.sleep(0.01)
    assert await _sql(standby.dsn, "SELECT count(*) FROM fingerprints") == 0
    after = await store.lookup(fp.hashes)
    assert sorted(zip(after.hashes.tolist(), after.offsets.tolist(), strict=True)) == sorted(
        zip(hits.hashes.tolist(), hits.offsets.tolist(), strict=True)
    )


async def test_replication_lag_is_small(replicated) -> None:
    """Commit on the primary to found through the replica, for a few songs: well under a
    second on one machine (BENCHMARKS.md records the distribution)."""
    rng = np.random.default_rng(2)
    lags = []
    async with opened(*replicated) as store:
        for i in range(5):
            fp = make_fingerprints(rng, 2000)
            song, _ = await store.add_song(make_song(fp, f"lag-{i}"))
            lags.append(await _wait_found(store, fp.hashes, song.id))
    assert max(lags) < 1.0, lags


async def test_a_stalled_replica_is_store_unavailable_within_the_stall_timeout(
    replicated,
) -> None:
    primary, standby = replicated
    stall_s = 1.0
    rng = np.random.default_rng(3)
    fp = make_fingerprints(rng, 500)
    async with opened(primary, standby, db_stall_timeout_s=stall_s) as store:
        assert await store.ready()
        standby.freeze()
        try:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await store.lookup(fp.hashes)
            assert time.monotonic() - started < 2 * stall_s + 1.0
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await store.ready()
            assert time.monotonic() - started < 2 * stall_s + 1.0
            # Writes do not need the replica.
            song, created = await store.add_song(make_song(fp, "stalled-replica"))
            assert created
        finally:
            standby.thaw()
        await _wait_found(store, fp.hashes, song.id)
        assert await store.ready()


def test_through_the_api_a_new_song_is_listed_at_once_and_identified_once_replayed(
    replicated, tmp_path: Path
) -> None:
    """What a client sees: POST /songs (the primary), GET /songs/{id} (the primary) at once,
    POST /identify (the replica) answering no match until the replica has replayed the song."""
    primary, standby = replicated
    clip = tmp_path / "clip.mp3"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-ss", "8", "-t", "8",
         "-i", str(MUSIC / "nebula.ogg"), str(clip)],
        check=True,
    )  # fmt: skip
    # A catalogue of the service's own fingerprint version, apart from the other tests'.
    asyncio.run(_sql(primary.dsn, "CREATE DATABASE api_catalogue"))
    primary_url, standby_url = (
        dsn.rsplit("/", 1)[0] + "/api_catalogue" for dsn in (primary.dsn, standby.dsn)
    )
    assert wait_until(lambda: _reachable(standby_url), timeout_s=REPLAY_WAIT_S)
    settings = Settings(
        database_url=primary_url,
        database_read_url=standby_url,
        cpu_workers=1,
        environment="test",
        db_pool_min_size=1,
        db_pool_max_size=2,
    )

    def identified(client: httpx.Client) -> list[int]:
        with clip.open("rb") as f:
            r = client.post("/identify", files={"file": (clip.name, f)})
        assert r.status_code == 200, r.text
        return [m["song"]["id"] for m in r.json()["matches"]]

    with LiveServer(settings) as live, live.client() as client:
        asyncio.run(_sql(standby.dsn, "SELECT pg_wal_replay_pause()"))
        try:
            with (MUSIC / "nebula.ogg").open("rb") as f:
                r = client.post("/songs", files={"file": ("nebula.ogg", f)})
            assert r.status_code == 201, r.text
            song_id = r.json()["id"]
            listed = client.get(f"/songs/{song_id}")
            assert listed.status_code == 200 and listed.json()["id"] == song_id
            assert song_id not in identified(client)
        finally:
            asyncio.run(_sql(standby.dsn, "SELECT pg_wal_replay_resume()"))
        assert wait_until(lambda: song_id in identified(client), timeout_s=REPLAY_WAIT_S)
        assert identified(client)[0] == song_id

"""How long a song indexed on the primary stays invisible to lookups on a read replica.

A private PostgreSQL primary and a hot standby streaming from it (pg_basebackup -R, as
tests/integration/test_read_replica.py starts them) on this machine; a PostgresStore with
`read_dsn` on the standby, as DATABASE_READ_URL configures the service. Two cases:

1. idle: songs of `--song-fingerprints` fingerprints (a 4-minute song stores about 30,000)
   added one at a time; for each, the time from `add_song` returning (its commit) to the first
   `lookup` through the replica that finds it (polled every millisecond), and the standby's
   replay of the commit's WAL position (`pg_last_wal_replay_lsn()`);
2. after a compaction: `--compact-rows` delta rows (about 1.5 h of audio per million, the
   default background trigger) compacted on the primary, a song added the moment `compact()`
   returns: the replica replays the compaction's WAL before it. Repeated `--compactions`
   times.

Both servers run with fsync=off on one host, so this is the lag of WAL shipping and replay
alone, not of a network or a disk. `--write` replaces the `replica-lag` table of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import time
from datetime import UTC, datetime

import asyncpg
import numpy as np

from benchmarks.benchmarks_md import this_command, write_section
from service.audio.hashes import Fingerprints
from service.store import NewSong, SongMeta
from service.store.postgres import PostgresStore
from tests.private_pg import streaming_replica

HEADING = "## Read replica lag (`benchmarks/replica_lag.py`)"
VERSION = "replica-lag-bench"
POLL_S = 0.001
GIVE_UP_S = 30.0


def _song(rng: np.random.Generator, n: int, name: str) -> NewSong:
    fp = Fingerprints(
        hashes=rng.integers(0, 1 << 23, n).astype(np.int32),
        offsets=rng.integers(0, 7500, n).astype(np.int32),
    )
    return NewSong(
        meta=SongMeta(title=name),
        duration_s=240.0,
        n_frames=7500,
        content_sha256=name,
        fingerprints=fp,
    )


async def _until(predicate, started: float) -> float:
    while time.perf_counter() - started < GIVE_UP_S:
        if await predicate():
            return time.perf_counter() - started
        await asyncio.sleep(POLL_S)
    raise TimeoutError("the replica did not catch up")


async def _visible(store: PostgresStore, song: NewSong) -> tuple[int, float]:
    """Add `song` on the primary; (its id, seconds until a replica lookup finds it)."""
    probe = song.fingerprints.hashes[:200]
    added, _ = await store.add_song(song)
    started = time.perf_counter()

    async def found() -> bool:
        hits = await store.lookup(probe)
        return bool(np.any(hits.song_ids == added.id))

    return added.id, await _until(found, started)


async def _replayed(primary: asyncpg.Connection, standby: asyncpg.Connection) -> float:
    """Seconds until the standby has replayed the primary's current WAL position."""
    lsn = await primary.fetchval("SELECT pg_current_wal_lsn()")
    started = time.perf_counter()

    async def caught_up() -> bool:
        return bool(await standby.fetchval("SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", lsn))

    return await _until(caught_up, started)


async def measure(args: argparse.Namespace, primary_dsn: str, standby_dsn: str) -> dict:
    rng = np.random.default_rng(7)
    await PostgresStore(primary_dsn, VERSION).migrate()
    store = PostgresStore(
        primary_dsn, VERSION, read_dsn=standby_dsn, compact_delta_rows=0, pool_min_size=1
    )
    await store.open()
    primary = await asyncpg.connect(primary_dsn)
    standby = await asyncpg.connect(standby_dsn)
    idle_found, idle_replay, after_compaction, compaction_replay, compact_s = [], [], [], [], []
    try:
        for i in range(args.songs):
            song = _song(rng, args.song_fingerprints, f"idle-{i}")
            await store.add_song(song)
            idle_replay.append(await _replayed(primary, standby))
            _, lag = await _visible(store, _song(rng, args.song_fingerprints, f"idle-b-{i}"))
            idle_found.append(lag)
        for c in range(args.compactions):
            per_song = args.song_fingerprints
            for i in range(max(1, args.compact_rows // per_song)):
                await store.add_song(_song(rng, per_song, f"bulk-{c}-{i}"))
            await _replayed(primary, standby)
            started = time.perf_counter()
            await store.compact()
            compact_s.append(time.perf_counter() - started)
            _, lag = await _visible(store, _song(rng, per_song, f"after-{c}"))
            after_compaction.append(lag)
            compaction_replay.append(await _replayed(primary, standby))
    finally:
        await primary.close()
        await standby.close()
        await store.close()
    return {
        "idle_found": idle_found,
        "idle_replay": idle_replay,
        "after_compaction": after_compaction,
        "compact_s": compact_s,
    }


def _row(name: str, seconds: list[float]) -> str:
    ms = np.array(seconds) * 1000
    return (
        f"| {name} | {len(ms)} | {np.percentile(ms, 50):.1f} | {np.percentile(ms, 95):.1f} | "
        f"{ms.max():.1f} |"
    )


def report(r: dict, args: argparse.Namespace) -> list[str]:
    return [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, a private primary and hot "
        "standby (PostgreSQL 15, fsync=off, streaming over 127.0.0.1) on the same host, "
        f"shared with other jobs (load average {os.getloadavg()[0]:.1f} at the end); "
        f"Python {platform.python_version()}. Measured "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M')} UTC.",
        "",
        "| from the primary's commit to | samples | p50 ms | p95 ms | max ms |",
        "|---|---|---|---|---|",
        _row("the standby replaying it (idle primary)", r["idle_replay"]),
        _row(
            f"a lookup through the replica finding the song ({args.song_fingerprints:,} "
            "fingerprints, idle primary)",
            r["idle_found"],
        ),
        _row(
            f"the same, for a song added the moment `compact()` of {args.compact_rows:,} "
            "delta rows returned",
            r["after_compaction"],
        ),
        "",
        f"The compactions took {np.mean(r['compact_s']):.1f} s each on the primary.",
    ]


async def run(args: argparse.Namespace) -> dict:
    with streaming_replica() as (primary, standby):
        return await measure(args, primary.dsn, standby.dsn)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--songs", type=int, default=30)
    parser.add_argument("--song-fingerprints", type=int, default=30_000)
    parser.add_argument("--compact-rows", type=int, default=1_000_000)
    parser.add_argument("--compactions", type=int, default=3)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    lines = report(result, args)
    print("\n".join(lines))
    if args.write:
        write_section("replica-lag", HEADING, this_command("benchmarks.replica_lag"), lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

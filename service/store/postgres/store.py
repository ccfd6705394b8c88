"""PostgresStore: the production catalogue, PostgreSQL through asyncpg pools, plain SQL: one
to the primary, and one to a read replica for lookups when one is configured.

Its parts, one module each: schema (migrations, index version), catalogue (songs, envelopes;
lookup and compaction of the fingerprint index), ledger (the worker's processed objects) and
streams (segments, windows, plays, events), all on the connections of connection.py.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from service.errors import StoreUnavailable
from service.store.postgres.catalogue import PostgresCatalogue
from service.store.postgres.connection import unavailable
from service.store.postgres.gaps import PostgresGaps
from service.store.postgres.ledger import PostgresLedger
from service.store.postgres.schema import PostgresSchema
from service.store.postgres.streams import PostgresStreams

log = logging.getLogger(__name__)


class PostgresStore(
    PostgresSchema, PostgresCatalogue, PostgresLedger, PostgresStreams, PostgresGaps
):
    """Catalogue in PostgreSQL. `open()` builds the pool; `migrate()` and `ready()` also work
    before it (the `migrate` command and probes use them on an unopened store)."""

    async def open(self) -> None:
        self._pool = await self._create_pool(self._dsn)
        try:
            if self._read_dsn is not None:
                # Warm like the primary's: min_size connections opened now, not on the
                # first identification.
                self._read_pool = await self._create_pool(self._read_dsn)
            if self._migrate_on_start:
                await self.migrate()
            if not await self._pending():
                await self._check_version()
                await self._load_song_frames()
            else:
                # Deployments that migrate in a separate job start replicas first: they stay
                # not-ready (ready() is False) until the job is done, then check the version.
                log.warning("database migrations are pending; run `song-detection migrate`")
        except BaseException:
            await self.close()
            raise

    def connection_pool_usage(self) -> tuple[int, int] | None:
        pool = self._pool
        if pool is None:
            return None
        size = pool.get_size()
        return size, size - pool.get_idle_size()

    async def close(self) -> None:
        task, self._background = self._background, None
        if task is not None and not task.done():
            # Cancelling rolls the compaction back; the delta stays for the next one.
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        pools = (self._read_pool, self._pool)
        self._read_pool = self._pool = None
        for pool in pools:
            if pool is not None:
                await pool.close()

    async def _create_pool(self, dsn: str) -> asyncpg.Pool:
        try:
            return await asyncpg.create_pool(
                dsn,
                min_size=self._pool_min_size,
                max_size=self._pool_max_size,
                command_timeout=self._stall_timeout_s,
                timeout=self._stall_timeout_s,
            )
        except Exception as exc:
            if unavailable(exc):
                raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
            raise

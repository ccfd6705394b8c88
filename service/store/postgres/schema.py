"""Migrations and the index version in PostgreSQL.

Migrations run under a session-level advisory lock, so replicas starting together take turns;
the fingerprint version recorded in `index_meta` makes a catalogue refuse code that
fingerprints differently.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from service.errors import IndexMismatch, StoreUnavailable
from service.store.migrations import list_migrations
from service.store.postgres.connection import UNAVAILABLE, PostgresBase

log = logging.getLogger(__name__)

#: pg_advisory_lock key held while migrating, so replicas starting together take turns.
#: Arbitrary but fixed: the bytes of "songdet" as an int64.
MIGRATION_LOCK_KEY = 0x736F6E67646574


class PostgresSchema(PostgresBase):
    """Migrations, readiness and the index version check."""

    async def migrate(self) -> list[str]:
        """Apply pending migrations, each in its own transaction, under an advisory lock.

        The lock is session-level on a connection of its own (not a pooled one), so it is
        released even if a migration fails and cannot leak into a connection the pool reuses.
        """
        migrations = list_migrations("postgres", self._migrations_dir)
        try:
            conn = await asyncpg.connect(self._dsn, timeout=self._command_timeout_s)
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
        applied: list[str] = []
        try:
            # No statement timeout: building an index on a large catalogue takes what it takes,
            # and so may waiting for another replica's migrations. Closing the connection
            # (finally, below) releases the lock, even when a migration fails.
            await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for migration in migrations:
                if migration.version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql())
                    await conn.execute(
                        "INSERT INTO schema_migrations (version) VALUES ($1)", migration.version
                    )
                log.info("applied migration %s", migration.version)
                applied.append(migration.version)
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"PostgreSQL unavailable while migrating: {exc}") from exc
        finally:
            await conn.close()
        return applied

    async def _pending(self) -> list[str]:
        migrations = list_migrations("postgres", self._migrations_dir)
        async with self._connection() as conn:
            if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
                return [m.version for m in migrations]
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        return [m.version for m in migrations if m.version not in done]

    async def _check_version(self) -> None:
        """Record the fingerprint version in a new index; refuse an index built with another."""
        async with self._connection() as conn:
            await conn.execute(
                "INSERT INTO index_meta (key, value) VALUES ('fingerprint_version', $1)"
                " ON CONFLICT (key) DO NOTHING",
                self._params_version,
            )
            stored = await conn.fetchval(
                "SELECT value FROM index_meta WHERE key = 'fingerprint_version'"
            )
        if stored != self._params_version:
            raise IndexMismatch(
                f"the catalogue was built with fingerprint version {stored}, but this code "
                f"fingerprints with {self._params_version}; re-index into a new database or "
                "run the matching release"
            )
        self._version_checked = True

    async def stored_version(self) -> str | None:
        async with self._connection() as conn:
            if await conn.fetchval("SELECT to_regclass('index_meta')") is None:
                return None
            return await conn.fetchval(
                "SELECT value FROM index_meta WHERE key = 'fingerprint_version'"
            )

    async def ready(self) -> bool:
        """Migrated, of our fingerprint version, and the read replica (if any) answering;
        StoreUnavailable within the stall timeout when a database does not answer."""
        try:
            async with asyncio.timeout(self._stall_timeout_s):
                if await self._pending():
                    return False
                if not self._version_checked:
                    await self._check_version()
                if self._read_dsn is not None:
                    # Identification reads the replica: a task that cannot reach it is not
                    # ready to serve, whatever the primary says.
                    async with self._read_connection() as conn:
                        await conn.fetchval("SELECT 1")
                return True
        except TimeoutError as exc:
            raise StoreUnavailable(
                f"PostgreSQL did not answer within {self._stall_timeout_s:g} s"
            ) from exc

"""What every part of PostgresStore shares: its settings, its pool and process-local caches,
how a part gets a connection, and which failures mean the database cannot be used right now
(StoreUnavailable, a 503) rather than a bug in a statement."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import asyncpg

from service.errors import StoreUnavailable
from service.store.postings import SongFrames
from service.store.records import CompactionResult

#: Failures that mean "the database cannot be used right now" (TimeoutError, raised by
#: pool.acquire and command_timeout, is an OSError), as opposed to a bug in a statement. A
#: missing database or refused login also belong: the service cannot fix either itself. So do
#: the client's own errors about its connections (InterfaceError: "connection is closed",
#: "pool is closing"; InternalClientError: a connection lost mid-release in a fast shutdown),
#: except those about the arguments of a statement (`CLIENT_ARGUMENT_ERRORS`).
UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InvalidCatalogNameError,
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)
CLIENT_ARGUMENT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.DataError,
    asyncpg.exceptions.ClientConfigurationError,
    asyncpg.exceptions.UnsupportedClientFeatureError,
)


def unavailable(exc: BaseException) -> bool:
    return isinstance(exc, UNAVAILABLE) and not isinstance(exc, CLIENT_ARGUMENT_ERRORS)


class CachedTotal:
    """A catalogue-wide count read from the database at most once per `ttl_s` and adjusted
    in between by this process's own adds and deletes: other processes' changes show within
    the ttl, which is all its users (the frequent-hash cap, and the chance votes of what a
    lookup's budget left out) need."""

    def __init__(self, ttl_s: float = 60.0) -> None:
        self._ttl_s = ttl_s
        self._value: int | None = None
        self._read_at = 0.0

    def fresh(self) -> int | None:
        if self._value is None or time.monotonic() - self._read_at > self._ttl_s:
            return None
        return self._value

    def set(self, value: int) -> None:
        self._value, self._read_at = value, time.monotonic()

    def adjust(self, change: int) -> None:
        if self._value is not None:
            self._value = max(0, self._value + change)


class PostgresBase:
    """The settings and state of one PostgresStore, and its connections. `migrate()` and
    `ready()` work before the pool exists (the `migrate` command and probes use them on an
    unopened store), so `_connection()` falls back to a one-off connection."""

    def __init__(
        self,
        dsn: str,
        params_version: str,
        *,
        migrate_on_start: bool = True,
        pool_min_size: int = 2,
        pool_max_size: int = 10,
        command_timeout_s: float = 60.0,
        stall_timeout_s: float = 5.0,
        migrations_dir: Path | None = None,
        compact_delta_rows: int = 1_000_000,
        read_dsn: str | None = None,
    ) -> None:
        self._dsn = dsn
        #: A read replica for lookups and the other reads of identification (see
        #: `_read_connection`); None: they go to `dsn` too.
        self._read_dsn = read_dsn
        self._params_version = params_version
        self._migrate_on_start = migrate_on_start
        self._pool_min_size = pool_min_size
        self._pool_max_size = pool_max_size
        self._command_timeout_s = command_timeout_s
        #: Longest wait for a connection, a connect, a probe or an ordinary statement: a
        #: database that stops answering (a stalled host, a failover) turns into
        #: StoreUnavailable (503) this fast. Writing a song's fingerprints gets
        #: `command_timeout_s`; compaction and migrations run without a limit.
        self._stall_timeout_s = stall_timeout_s
        self._migrations_dir = migrations_dir
        self._pool: asyncpg.Pool | None = None
        self._read_pool: asyncpg.Pool | None = None
        self._version_checked = False
        #: Delta rows above which add_song starts a background compaction (0: never).
        self._compact_delta_rows = compact_delta_rows
        #: Delta rows this process believes are waiting (its own adds since its last compaction).
        self._delta_rows = 0
        self._background: asyncio.Task[CompactionResult] | None = None
        self._song_frames = SongFrames()
        self._fingerprint_total = CachedTotal()
        #: Frames of all songs, for the chance votes of postings a lookup's budget left out.
        self._catalogue_frames = CachedTotal()

    def _connection(self) -> AbstractAsyncContextManager[asyncpg.Connection]:
        """A pooled connection to the primary, or a one-off one before `open()`; unreachable
        -> StoreUnavailable."""
        return self._pooled(self._pool, self._dsn)

    def _read_connection(self) -> AbstractAsyncContextManager[asyncpg.Connection]:
        """A connection for reads that may lag the primary by the replica's replay delay:
        fingerprint lookups and what identification reads beside them (song lengths and
        metadata of the songs a lookup found, band envelopes, the fingerprint total). The
        replica's pool when one is configured, else the primary's. Never for a read whose
        caller just wrote, or decides a write (the catalogue API, duplicate detection)."""
        if self._read_dsn is None:
            return self._connection()
        return self._pooled(self._read_pool, self._read_dsn)

    @asynccontextmanager
    async def _pooled(
        self, pool: asyncpg.Pool | None, dsn: str
    ) -> AsyncIterator[asyncpg.Connection]:
        try:
            if pool is not None:
                async with pool.acquire(timeout=self._stall_timeout_s) as conn:
                    yield conn
            else:
                conn = await asyncpg.connect(
                    dsn,
                    timeout=self._stall_timeout_s,
                    command_timeout=self._stall_timeout_s,
                )
                try:
                    yield conn
                finally:
                    await conn.close(timeout=self._stall_timeout_s)
        except Exception as exc:
            if isinstance(exc, TimeoutError):
                raise StoreUnavailable("PostgreSQL did not answer in time") from exc
            if unavailable(exc):
                raise StoreUnavailable(
                    f"PostgreSQL unavailable: {exc or type(exc).__name__}"
                ) from exc
            raise

    @asynccontextmanager
    async def _maintenance_connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection of its own, without statement timeout: compacting a large delta or
        purging a large catalogue takes what it takes, and must not hold a pool slot."""
        try:
            conn = await asyncpg.connect(self._dsn, timeout=self._command_timeout_s)
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
        try:
            yield conn
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"PostgreSQL unavailable while compacting: {exc}") from exc
        finally:
            await conn.close()

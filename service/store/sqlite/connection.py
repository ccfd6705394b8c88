"""What every part of SqliteStore shares: its settings, the one thread that owns the one
connection, explicit transactions, and which failures mean the file cannot be used right now.

sqlite3 blocks, so every call runs on one dedicated thread that owns the only connection:
the event loop never waits on disk, and statements are serialised, which is what SQLite
wants from a single process anyway. Other processes (the CLI next to a running server) are
kept consistent by SQLite's own locking: writes take the write lock up front
(`BEGIN IMMEDIATE`) and wait up to the busy timeout for it.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from service.errors import StoreUnavailable

T = TypeVar("T")

#: Result codes that mean the file cannot be used right now (locked by another process past
#: the busy timeout, missing directory, full or failing disk), not that a statement is wrong.
_UNAVAILABLE_CODES = frozenset(
    {"SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_CANTOPEN", "SQLITE_IOERR", "SQLITE_FULL"}
)

#: SQLite's clock as the store writes it (UTC, ISO 8601 with a Z, comparable as text).
NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"


def _casefold(value: str | None) -> str | None:
    return None if value is None else value.casefold()


@contextmanager
def transaction(conn: sqlite3.Connection, mode: str = "IMMEDIATE") -> Iterator[None]:
    """One explicit transaction (the connection has no implicit ones): IMMEDIATE takes the
    write lock up front, DEFERRED gives a read a single snapshot."""
    conn.execute(f"BEGIN {mode}")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class SqliteBase:
    """The settings and state of one SqliteStore, and the thread its statements run on.
    Usable before `open()` (the `migrate` command and probes call it unopened)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        params_version: str,
        *,
        migrate_on_start: bool = True,
        busy_timeout_s: float = 60.0,
        migrations_dir: Path | None = None,
    ) -> None:
        self._path = os.fspath(path)
        self._params_version = params_version
        self._migrate_on_start = migrate_on_start
        self._busy_timeout_s = busy_timeout_s
        self._migrations_dir = migrations_dir
        self._executor: ThreadPoolExecutor | None = None
        #: Created, used and closed only on the executor's thread.
        self._conn: sqlite3.Connection | None = None
        self._version_checked = False
        self._stream_locks: dict[str, asyncio.Lock] = {}

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, fn, *args)

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(self._connection(), *args)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorname in _UNAVAILABLE_CODES:
                raise StoreUnavailable(f"SQLite database {self._path}: {exc}") from exc
            raise

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            # isolation_level=None: no implicit transactions, every one is spelled out.
            conn = sqlite3.connect(
                self._path,
                timeout=self._busy_timeout_s,
                isolation_level=None,
                check_same_thread=False,
            )
            try:
                conn.row_factory = sqlite3.Row
                self._enable_wal(conn)
                # In WAL mode NORMAL loses at most the last commits on power loss, never
                # consistency, and spares an fsync per transaction.
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA foreign_keys=ON")
                conn.create_function("casefold", 1, _casefold, deterministic=True)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        """Switch to WAL, retrying within the busy timeout.

        Changing the journal mode of a new file needs an exclusive lock, and SQLite answers
        BUSY at once (without calling the busy handler) when another connection holds it, as
        happens when replicas open a new database together.
        """
        deadline = time.monotonic() + self._busy_timeout_s
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorname != "SQLITE_BUSY" or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

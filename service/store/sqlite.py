"""The zero-setup catalogue: one SQLite file through the standard library.

sqlite3 blocks, so every call runs on one dedicated thread that owns the only connection:
the event loop never waits on disk, and statements are serialised, which is what SQLite
wants from a single process anyway. Other processes (the CLI next to a running server) are
kept consistent by SQLite's own locking: writes take the write lock up front
(`BEGIN IMMEDIATE`) and wait up to the busy timeout for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from service.arrays import unique_values
from service.errors import IndexMismatch, StoreUnavailable
from service.store.columns import PROCESSED_COLUMNS, SONG_COLUMNS
from service.store.envelopes import envelope_blob, envelope_slice
from service.store.migrations import list_migrations
from service.store.records import (
    CompactionResult,
    EnvelopeRange,
    EnvelopeSlice,
    Hits,
    NewSong,
    ProcessedObject,
    Song,
    SongPage,
    StoreStats,
)
from service.store.rules import (
    drop_frequent,
    editable_changes,
    reject_nul,
    unique_fingerprints,
    valid_id,
)
from service.store.sqlite_streams import SqliteStreamsMixin

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Result codes that mean the file cannot be used right now (locked by another process past
#: the busy timeout, missing directory, full or failing disk), not that a statement is wrong.
_UNAVAILABLE_CODES = frozenset(
    {"SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_CANTOPEN", "SQLITE_IOERR", "SQLITE_FULL"}
)


def _song(row: sqlite3.Row) -> Song:
    values = dict(zip(row.keys(), row, strict=True))
    values["created_at"] = datetime.fromisoformat(values["created_at"])
    # SQLite hands back a whole REAL as an int from RETURNING.
    values["duration_s"] = float(values["duration_s"])
    return Song(**values)


#: SQLite's clock as the ledger stores it (UTC, ISO 8601 with a Z, comparable as text).
_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"


def _processed(row: sqlite3.Row) -> ProcessedObject:
    values = dict(zip(row.keys(), row, strict=True))
    for name in ("created_at", "claimed_at", "published_at"):
        if values[name] is not None:
            values[name] = datetime.fromisoformat(values[name])
    return ProcessedObject(**values)


def _casefold(value: str | None) -> str | None:
    return None if value is None else value.casefold()


def split_statements(script: str) -> list[str]:
    """The statements of a SQL script, so that they can run inside our own transaction.

    `executescript` would commit any open transaction first, which defeats both the
    one-transaction-per-migration rule and the lock taken by BEGIN IMMEDIATE.
    `complete_statement` knows about string literals, comments and trigger bodies, so a `;`
    inside them does not split.
    """
    statements: list[str] = []
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            statements.append(buffer)
            buffer = ""
    # The final piece got a `;` it never had; anything but whitespace there is unterminated.
    if buffer.removesuffix(";").strip():
        raise ValueError(f"unterminated SQL statement: {buffer[:80]!r}")
    return statements


@contextmanager
def _transaction(conn: sqlite3.Connection, mode: str = "IMMEDIATE") -> Iterator[None]:
    conn.execute(f"BEGIN {mode}")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _set_envelope(
    conn: sqlite3.Connection, song_id: int, envelope: np.ndarray, envelope_format: int
) -> None:
    """Store a song's band envelopes unless it has some of this format (add_song's new song
    has none); nothing while the song does not exist. Runs inside the caller's transaction."""
    conn.execute(
        "INSERT INTO song_envelopes (song_id, format, bands, envelope)"
        " SELECT id, ?, ?, ? FROM songs WHERE id = ?"
        " ON CONFLICT (song_id) DO UPDATE SET format = excluded.format,"
        " bands = excluded.bands, envelope = excluded.envelope"
        " WHERE song_envelopes.format <> excluded.format",
        (envelope_format, envelope.shape[1], envelope_blob(envelope), song_id),
    )


class SqliteStore(SqliteStreamsMixin):
    """Catalogue in one SQLite file. Usable before `open()` (the `migrate` command and probes
    call it unopened); `close()` ends the connection and its thread."""

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

    # --- the store thread -------------------------------------------------------------------

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

    # --- lifecycle --------------------------------------------------------------------------

    async def open(self) -> None:
        await self._run(lambda conn: None)  # fail now, not at the first request
        try:
            if self._migrate_on_start:
                await self.migrate()
            if not await self._run(self._pending):
                await self._run(self._check_version)
            else:
                log.warning("database migrations are pending; run `song-detection migrate`")
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(executor, self._close_connection)
        finally:
            executor.shutdown(wait=False)

    # --- schema -----------------------------------------------------------------------------

    async def migrate(self) -> list[str]:
        return await self._run(self._migrate)

    def _migrate(self, conn: sqlite3.Connection) -> list[str]:
        """Each pending migration in its own write transaction; the done set is read again
        under the write lock, so a process migrating at the same time is never repeated."""
        migrations = list_migrations("sqlite", self._migrations_dir)
        if not self._pending(conn):
            return []
        applied: list[str] = []
        for migration in migrations:
            with _transaction(conn):
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version TEXT PRIMARY KEY,"
                    " applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"
                    ") STRICT"
                )
                done = conn.execute(
                    "SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)
                ).fetchone()
                if done:
                    continue
                for statement in split_statements(migration.sql()):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version) VALUES (?)", (migration.version,)
                )
            log.info("applied migration %s", migration.version)
            applied.append(migration.version)
        return applied

    def _pending(self, conn: sqlite3.Connection) -> list[str]:
        migrations = list_migrations("sqlite", self._migrations_dir)
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        ).fetchone()
        done = (
            {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
            if exists
            else set()
        )
        return [m.version for m in migrations if m.version not in done]

    def _check_version(self, conn: sqlite3.Connection) -> None:
        """Record the fingerprint version in a new index; refuse an index built with another."""
        conn.execute(
            "INSERT INTO index_meta (key, value) VALUES ('fingerprint_version', ?)"
            " ON CONFLICT (key) DO NOTHING",
            (self._params_version,),
        )
        stored = conn.execute(
            "SELECT value FROM index_meta WHERE key = 'fingerprint_version'"
        ).fetchone()[0]
        if stored != self._params_version:
            raise IndexMismatch(
                f"the catalogue was built with fingerprint version {stored}, but this code "
                f"fingerprints with {self._params_version}; re-index into a new database or "
                "run the matching release"
            )
        self._version_checked = True

    async def ready(self) -> bool:
        if await self._run(self._pending):
            return False
        if not self._version_checked:
            await self._run(self._check_version)
        return True

    # --- songs ------------------------------------------------------------------------------

    async def add_song(self, song: NewSong) -> tuple[Song, bool]:
        meta = song.meta
        reject_nul(meta.title, meta.artist, meta.album, meta.isrc, meta.external_id)
        return await self._run(self._add_song, song)

    def _add_song(self, conn: sqlite3.Connection, song: NewSong) -> tuple[Song, bool]:
        hashes, frames = unique_fingerprints(song.fingerprints)
        meta = song.meta
        with _transaction(conn):
            rows = conn.execute(
                "INSERT INTO songs (title, artist, album, isrc, external_id, duration_s,"
                " n_frames, content_sha256, fingerprint_count)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                f" ON CONFLICT (content_sha256) DO NOTHING RETURNING {SONG_COLUMNS}",
                (
                    meta.title,
                    meta.artist,
                    meta.album,
                    meta.isrc,
                    meta.external_id,
                    float(song.duration_s),
                    int(song.n_frames),
                    song.content_sha256,
                    len(hashes),
                ),
            ).fetchall()
            # fetchall(), not fetchone(): a RETURNING statement must run to completion before
            # the transaction can commit.
            row = rows[0] if rows else None
            if row is None:
                # We hold the write lock, so the row that conflicted is still there.
                existing = conn.execute(
                    f"SELECT {SONG_COLUMNS} FROM songs WHERE content_sha256 = ?",
                    (song.content_sha256,),
                ).fetchone()
                return _song(existing), False
            table = np.column_stack([hashes, np.full(len(hashes), row["id"], np.int32), frames])
            conn.executemany(
                "INSERT INTO fingerprints (hash, song_id, frame) VALUES (?, ?, ?)", table.tolist()
            )
            if song.envelope is not None and song.envelope.size:
                _set_envelope(conn, row["id"], song.envelope, song.envelope_format)
        return _song(row), True

    async def find_by_content(self, content_sha256: str) -> Song | None:
        return await self._run(self._find_by_content, content_sha256)

    def _find_by_content(self, conn: sqlite3.Connection, content_sha256: str) -> Song | None:
        row = conn.execute(
            f"SELECT {SONG_COLUMNS} FROM songs WHERE content_sha256 = ?", (content_sha256,)
        ).fetchone()
        return None if row is None else _song(row)

    async def lookup(
        self, hashes: np.ndarray, max_postings: int | None = None, max_hits: int | None = None
    ) -> Hits:
        wanted = unique_values(np.asarray(hashes, dtype=np.int32))
        if len(wanted) == 0:
            return Hits.empty()
        hits = await self._run(self._lookup, json.dumps(wanted.tolist()))
        return drop_frequent(hits, max_postings, max_hits)

    async def fingerprint_total(self) -> int:
        return await self._run(
            lambda conn: int(
                conn.execute("SELECT coalesce(sum(fingerprint_count), 0) FROM songs").fetchone()[0]
            )
        )

    def _lookup(self, conn: sqlite3.Connection, wanted_json: str) -> Hits:
        # One statement whatever the number of hashes (no 32766-variable limit): the JSON
        # array becomes a table that probes the fingerprints primary key.
        cursor = conn.cursor()
        cursor.row_factory = None  # plain tuples: numpy reads them in one call
        rows = cursor.execute(
            "SELECT f.hash, f.song_id, f.frame, s.n_frames"
            " FROM fingerprints f JOIN songs s ON s.id = f.song_id"
            " WHERE f.hash IN (SELECT value FROM json_each(?))",
            (wanted_json,),
        ).fetchall()
        if not rows:
            return Hits.empty()
        table = np.array(rows, dtype=np.int64)
        return Hits(
            hashes=table[:, 0].copy(),
            song_ids=table[:, 1].copy(),
            offsets=table[:, 2].copy(),
            song_frames=table[:, 3].copy(),
        )

    async def set_song_envelope(
        self, song_id: int, envelope: np.ndarray, envelope_format: int
    ) -> None:
        if envelope.size:
            await self._run(self._set_song_envelope, song_id, envelope, envelope_format)

    def _set_song_envelope(
        self, conn: sqlite3.Connection, song_id: int, envelope: np.ndarray, envelope_format: int
    ) -> None:
        with _transaction(conn):
            _set_envelope(conn, song_id, envelope, envelope_format)

    async def song_envelopes(
        self, ranges: list[EnvelopeRange], envelope_format: int
    ) -> dict[int, EnvelopeSlice]:
        if not ranges:
            return {}
        return await self._run(self._song_envelopes, ranges, envelope_format)

    def _song_envelopes(
        self, conn: sqlite3.Connection, ranges: list[EnvelopeRange], envelope_format: int
    ) -> dict[int, EnvelopeSlice]:
        found: dict[int, EnvelopeSlice] = {}
        for r in ranges:
            first, last = max(0, r.first), max(0, r.last)
            row = conn.execute(
                "SELECT bands, substr(envelope, ? * bands + 1, ? * bands) FROM song_envelopes"
                " WHERE song_id = ? AND format = ?",
                (first, last - first, r.song_id, envelope_format),
            ).fetchone()
            if row is not None:
                found[r.song_id] = envelope_slice(row[1], row[0], first)
        return found

    async def get_song(self, song_id: int) -> Song | None:
        if not valid_id(song_id):
            return None
        return await self._run(self._get_song, song_id)

    def _get_song(self, conn: sqlite3.Connection, song_id: int) -> Song | None:
        row = conn.execute(f"SELECT {SONG_COLUMNS} FROM songs WHERE id = ?", (song_id,)).fetchone()
        return None if row is None else _song(row)

    async def get_songs(self, song_ids: list[int]) -> dict[int, Song]:
        if not song_ids:
            return {}
        return await self._run(self._get_songs, json.dumps(sorted({int(i) for i in song_ids})))

    def _get_songs(self, conn: sqlite3.Connection, ids_json: str) -> dict[int, Song]:
        rows = conn.execute(
            f"SELECT {SONG_COLUMNS} FROM songs WHERE id IN (SELECT value FROM json_each(?))",
            (ids_json,),
        ).fetchall()
        return {row["id"]: _song(row) for row in rows}

    async def list_songs(self, limit: int, offset: int, query: str | None = None) -> SongPage:
        reject_nul(query)
        return await self._run(self._list_songs, limit, offset, query)

    def _list_songs(
        self, conn: sqlite3.Connection, limit: int, offset: int, query: str | None
    ) -> SongPage:
        where, args = "", {}
        if query:
            # SQLite's LIKE folds ASCII only; casefold() (a Python function) folds all of
            # Unicode, and instr() needs no escaping of % and _.
            where = (
                " WHERE instr(casefold(title), :q) OR instr(casefold(artist), :q)"
                " OR instr(casefold(album), :q) OR instr(casefold(isrc), :q)"
                " OR instr(casefold(external_id), :q)"
            )
            args = {"q": query.casefold()}
        # A read transaction gives both statements one snapshot.
        with _transaction(conn, "DEFERRED"):
            total = conn.execute(f"SELECT count(*) FROM songs{where}", args).fetchone()[0]
            rows = conn.execute(
                f"SELECT {SONG_COLUMNS} FROM songs{where} ORDER BY id LIMIT :limit OFFSET :offset",
                {**args, "limit": limit, "offset": offset},
            ).fetchall()
        return SongPage(items=[_song(r) for r in rows], total=total, limit=limit, offset=offset)

    async def update_song(self, song_id: int, fields: dict[str, str | None]) -> Song | None:
        names = editable_changes(fields)
        if not names or not valid_id(song_id):
            return await self.get_song(song_id)
        return await self._run(self._update_song, song_id, {n: fields[n] for n in names})

    def _update_song(
        self, conn: sqlite3.Connection, song_id: int, fields: dict[str, str | None]
    ) -> Song | None:
        # Column names come from EDITABLE_FIELDS, values are parameters.
        assignments = ", ".join(f"{name} = :{name}" for name in fields)
        rows = conn.execute(
            f"UPDATE songs SET {assignments} WHERE id = :song_id RETURNING {SONG_COLUMNS}",
            {**fields, "song_id": song_id},
        ).fetchall()
        return _song(rows[0]) if rows else None

    async def delete_song(self, song_id: int) -> bool:
        if not valid_id(song_id):
            return False
        return await self._run(self._delete_song, song_id)

    def _delete_song(self, conn: sqlite3.Connection, song_id: int) -> bool:
        with _transaction(conn):
            deleted = conn.execute("DELETE FROM songs WHERE id = ? RETURNING id", (song_id,))
            if not deleted.fetchall():
                return False
            conn.execute("DELETE FROM fingerprints WHERE song_id = ?", (song_id,))
        return True

    async def optimize(self) -> None:
        await self._run(lambda conn: conn.execute("ANALYZE"))

    async def compact(self, purge: bool = False, wait: bool = True) -> CompactionResult:
        # Row per fingerprint, no delta: a laptop catalogue is small enough that SQLite's
        # b-tree is both the write path and the index.
        return CompactionResult()

    async def stats(self) -> StoreStats:
        return await self._run(self._stats)

    def _stats(self, conn: sqlite3.Connection) -> StoreStats:
        songs, fingerprints = conn.execute(
            "SELECT count(*), coalesce(sum(fingerprint_count), 0) FROM songs"
        ).fetchone()
        (database_bytes,) = conn.execute(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()"
        ).fetchone()
        return StoreStats(
            songs=songs, fingerprints=fingerprints, extra={"database_bytes": database_bytes}
        )

    # --- the SQS worker's idempotency ledger ------------------------------------------------

    async def get_processed(
        self, bucket: str, key: str, version_token: str
    ) -> ProcessedObject | None:
        return await self._run(self._get_processed, bucket, key, version_token)

    def _get_processed(
        self, conn: sqlite3.Connection, bucket: str, key: str, version_token: str
    ) -> ProcessedObject | None:
        row = conn.execute(
            f"SELECT {PROCESSED_COLUMNS} FROM processed_objects"
            " WHERE bucket = ? AND key = ? AND version_token = ?",
            (bucket, key, version_token),
        ).fetchone()
        return None if row is None else _processed(row)

    async def record_processed(
        self, bucket: str, key: str, version_token: str, kind: str, result_json: str
    ) -> tuple[ProcessedObject, bool]:
        return await self._run(
            self._record_processed, bucket, key, version_token, kind, result_json
        )

    def _record_processed(
        self,
        conn: sqlite3.Connection,
        bucket: str,
        key: str,
        version_token: str,
        kind: str,
        result_json: str,
    ) -> tuple[ProcessedObject, bool]:
        with _transaction(conn):
            rows = conn.execute(
                "INSERT INTO processed_objects (bucket, key, version_token, kind, result_json)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
                f" RETURNING {PROCESSED_COLUMNS}",
                (bucket, key, version_token, kind, result_json),
            ).fetchall()
            if rows:
                return _processed(rows[0]), True
            # The write lock is held, so the conflicting row is there.
            existing = self._get_processed(conn, bucket, key, version_token)
        assert existing is not None
        return existing, False

    async def claim_publication(
        self, bucket: str, key: str, version_token: str, lease_s: float
    ) -> bool:
        return await self._run(self._claim_publication, bucket, key, version_token, lease_s)

    def _claim_publication(
        self, conn: sqlite3.Connection, bucket: str, key: str, version_token: str, lease_s: float
    ) -> bool:
        rows = conn.execute(
            f"UPDATE processed_objects SET claimed_at = {_NOW}"
            " WHERE bucket = ? AND key = ? AND version_token = ? AND published_at IS NULL"
            " AND claimed_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?)"
            " RETURNING 1",
            (bucket, key, version_token, f"-{float(lease_s):.3f} seconds"),
        ).fetchall()
        return bool(rows)

    async def mark_published(self, bucket: str, key: str, version_token: str) -> None:
        await self._run(self._mark_published, bucket, key, version_token)

    def _mark_published(
        self, conn: sqlite3.Connection, bucket: str, key: str, version_token: str
    ) -> None:
        conn.execute(
            f"UPDATE processed_objects SET published_at = {_NOW}"
            " WHERE bucket = ? AND key = ? AND version_token = ? AND published_at IS NULL",
            (bucket, key, version_token),
        )

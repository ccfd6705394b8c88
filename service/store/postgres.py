"""The production catalogue: PostgreSQL through one asyncpg pool, plain SQL.

Both hot paths move fingerprints as binary COPY built and parsed with numpy: a song's tens of
thousands of rows go in as one buffer, and a lookup's hits come back as one buffer that
becomes arrays without a Python object per row.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import numpy as np

from service.errors import IndexMismatch, StoreUnavailable
from service.matching import Hits
from service.store import editable_changes, unique_fingerprints
from service.store.base import NewSong, ProcessedObject, Song, SongPage, StoreStats
from service.store.migrations import list_migrations
from service.store.postgres_streams import PostgresStreamsMixin

log = logging.getLogger(__name__)

#: pg_advisory_lock key held while migrating, so replicas starting together take turns.
#: Arbitrary but fixed: the bytes of "songdet" as an int64.
MIGRATION_LOCK_KEY = 0x736F6E67646574

_SONG_COLUMNS = (
    "id, title, artist, album, isrc, external_id, duration_s, n_frames, content_sha256, "
    "fingerprint_count, created_at"
)

_PROCESSED_COLUMNS = (
    "bucket, key, version_token, kind, result_json, created_at, claimed_at, published_at"
)

#: Failures that mean "the database cannot be used right now" (TimeoutError, raised by
#: pool.acquire and command_timeout, is an OSError), as opposed to a bug in a statement. A
#: missing database or refused login also belong: the service cannot fix either itself.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InvalidCatalogNameError,
    asyncpg.InvalidAuthorizationSpecificationError,
)

# --- binary COPY ------------------------------------------------------------------------------
# https://www.postgresql.org/docs/current/sql-copy.html#id-1.9.3.55.9.4: a signature, flags and
# header-extension length, then per row an int16 field count and per field an int32 byte
# length followed by the value, all big-endian; an int16 -1 ends the stream.
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_COPY_HEADER = _COPY_SIGNATURE + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_COPY_TRAILER = b"\xff\xff"


def _copy_row(*columns: str) -> np.dtype:
    """One binary COPY row of int4 columns: a field count, then (length, value) per column."""
    fields: list[tuple[str, str]] = [("fields", ">i2")]
    for column in columns:
        fields += [(f"{column}_len", ">i4"), (column, ">i4")]
    return np.dtype(fields)


_INSERT_ROW = _copy_row("hash", "song_id", "frame")
_HIT_ROW = _copy_row("hash", "song_id", "frame", "n_frames")


def encode_fingerprint_copy(song_id: int, hashes: np.ndarray, frames: np.ndarray) -> bytes:
    """Binary COPY payload of (hash, song_id, frame) rows, all int4."""
    rows = np.empty(len(hashes), dtype=_INSERT_ROW)
    rows["fields"] = 3
    rows["hash_len"] = rows["song_id_len"] = rows["frame_len"] = 4
    rows["hash"] = hashes
    rows["song_id"] = song_id
    rows["frame"] = frames
    return _COPY_HEADER + rows.tobytes() + _COPY_TRAILER


def decode_hit_copy(payload: bytes) -> Hits:
    """Hits from the binary COPY output of the four-int4-column lookup query."""
    if not payload.startswith(_COPY_SIGNATURE):
        raise ValueError("not a PostgreSQL binary COPY stream")
    extension_len = int.from_bytes(payload[15:19], "big")
    body = memoryview(payload)[19 + extension_len : len(payload) - len(_COPY_TRAILER)]
    if len(body) % _HIT_ROW.itemsize or payload[-2:] != _COPY_TRAILER:
        raise ValueError("truncated binary COPY stream")
    rows = np.frombuffer(body, dtype=_HIT_ROW)
    if len(rows) and not (
        (rows["fields"] == 4).all()
        and (rows["hash_len"] == 4).all()
        and (rows["song_id_len"] == 4).all()
        and (rows["frame_len"] == 4).all()
        and (rows["n_frames_len"] == 4).all()
    ):
        raise ValueError("unexpected row layout in binary COPY stream")
    return Hits(
        hashes=rows["hash"].astype(np.int64),
        song_ids=rows["song_id"].astype(np.int64),
        offsets=rows["frame"].astype(np.int64),
        song_frames=rows["n_frames"].astype(np.int64),
    )


def _song(row: asyncpg.Record) -> Song:
    return Song(**dict(row))


def _like_pattern(text: str) -> str:
    """Substring pattern for ILIKE matching `text` literally (its % and _ included)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class PostgresStore(PostgresStreamsMixin):
    """Catalogue in PostgreSQL. `open()` builds the pool; `migrate()` and `ready()` also work
    before it (the `migrate` command and probes use them on an unopened store)."""

    def __init__(
        self,
        dsn: str,
        params_version: str,
        *,
        migrate_on_start: bool = True,
        pool_min_size: int = 2,
        pool_max_size: int = 10,
        command_timeout_s: float = 60.0,
        migrations_dir: Path | None = None,
    ) -> None:
        self._dsn = dsn
        self._params_version = params_version
        self._migrate_on_start = migrate_on_start
        self._pool_min_size = pool_min_size
        self._pool_max_size = pool_max_size
        self._command_timeout_s = command_timeout_s
        self._migrations_dir = migrations_dir
        self._pool: asyncpg.Pool | None = None
        self._version_checked = False

    # --- lifecycle --------------------------------------------------------------------------

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=self._pool_min_size,
                max_size=self._pool_max_size,
                command_timeout=self._command_timeout_s,
                timeout=self._command_timeout_s,
            )
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
        try:
            if self._migrate_on_start:
                await self.migrate()
            if not await self._pending():
                await self._check_version()
            else:
                # Deployments that migrate in a separate job start replicas first: they stay
                # not-ready (ready() is False) until the job is done, then check the version.
                log.warning("database migrations are pending; run `song-detection migrate`")
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection, or a one-off one before `open()`; unreachable ->
        StoreUnavailable."""
        try:
            if self._pool is not None:
                async with self._pool.acquire(timeout=self._command_timeout_s) as conn:
                    yield conn
            else:
                conn = await asyncpg.connect(
                    self._dsn,
                    timeout=self._command_timeout_s,
                    command_timeout=self._command_timeout_s,
                )
                try:
                    yield conn
                finally:
                    await conn.close()
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"PostgreSQL unavailable: {exc}") from exc

    # --- schema -----------------------------------------------------------------------------

    async def migrate(self) -> list[str]:
        """Apply pending migrations, each in its own transaction, under an advisory lock.

        The lock is session-level on a connection of its own (not a pooled one), so it is
        released even if a migration fails and cannot leak into a connection the pool reuses.
        """
        migrations = list_migrations("postgres", self._migrations_dir)
        try:
            conn = await asyncpg.connect(self._dsn, timeout=self._command_timeout_s)
        except _UNAVAILABLE as exc:
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
        except _UNAVAILABLE as exc:
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

    async def ready(self) -> bool:
        if await self._pending():
            return False
        if not self._version_checked:
            await self._check_version()
        return True

    # --- songs ------------------------------------------------------------------------------

    async def add_song(self, song: NewSong) -> tuple[Song, bool]:
        hashes, frames = unique_fingerprints(song.fingerprints)
        meta = song.meta
        async with self._connection() as conn, conn.transaction():
            # ON CONFLICT waits for a concurrent insert of the same content to finish, so two
            # uploads of one file yield one song whichever commits first.
            row = await conn.fetchrow(
                "INSERT INTO songs (title, artist, album, isrc, external_id, duration_s,"
                " n_frames, content_sha256, fingerprint_count)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                f" ON CONFLICT (content_sha256) DO NOTHING RETURNING {_SONG_COLUMNS}",
                meta.title,
                meta.artist,
                meta.album,
                meta.isrc,
                meta.external_id,
                song.duration_s,
                song.n_frames,
                song.content_sha256,
                len(hashes),
            )
            if row is None:
                existing = await conn.fetchrow(
                    f"SELECT {_SONG_COLUMNS} FROM songs WHERE content_sha256 = $1",
                    song.content_sha256,
                )
                if existing is None:  # the other song was deleted in between
                    raise StoreUnavailable("song changed concurrently; retry")
                return _song(existing), False
            if len(hashes):
                await conn.copy_to_table(
                    "fingerprints",
                    # memoryview, not bytes: asyncpg would take bytes for a file name.
                    source=memoryview(encode_fingerprint_copy(row["id"], hashes, frames)),
                    columns=["hash", "song_id", "frame"],
                    format="binary",
                )
        return _song(row), True

    async def find_by_content(self, content_sha256: str) -> Song | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(
                f"SELECT {_SONG_COLUMNS} FROM songs WHERE content_sha256 = $1", content_sha256
            )
        return None if row is None else _song(row)

    async def lookup(self, hashes: np.ndarray) -> Hits:
        wanted = np.unique(np.asarray(hashes, dtype=np.int32))
        if len(wanted) == 0:
            return Hits.empty()
        # copy_from_query with arguments costs two extra round trips (asyncpg prepares the
        # query and has the server quote the values), so the array goes inline; it is built
        # from int32 values, so it can hold nothing but digits, signs and commas.
        literal = "{" + ",".join(map(str, wanted.tolist())) + "}"
        query = (
            "SELECT f.hash, f.song_id, f.frame, s.n_frames"
            " FROM fingerprints f JOIN songs s ON s.id = f.song_id"
            f" WHERE f.hash = ANY('{literal}'::int4[])"
        )
        chunks: list[bytes] = []

        async def collect(chunk: bytes) -> None:
            # A coroutine sink: given a file object, asyncpg would write each chunk from a
            # worker thread.
            chunks.append(chunk)

        async with self._connection() as conn:
            await conn.copy_from_query(query, output=collect, format="binary")
        return decode_hit_copy(b"".join(chunks))

    async def get_song(self, song_id: int) -> Song | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(f"SELECT {_SONG_COLUMNS} FROM songs WHERE id = $1", song_id)
        return None if row is None else _song(row)

    async def get_songs(self, song_ids: list[int]) -> dict[int, Song]:
        if not song_ids:
            return {}
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"SELECT {_SONG_COLUMNS} FROM songs WHERE id = ANY($1::int4[])",
                sorted(set(song_ids)),
            )
        return {row["id"]: _song(row) for row in rows}

    async def list_songs(self, limit: int, offset: int, query: str | None = None) -> SongPage:
        where, args = "", []
        if query:
            where = (
                " WHERE title ILIKE $1 OR artist ILIKE $1 OR album ILIKE $1"
                " OR isrc ILIKE $1 OR external_id ILIKE $1"
            )
            args = [_like_pattern(query)]
        n = len(args)
        async with self._connection() as conn, conn.transaction(isolation="repeatable_read"):
            # One snapshot for both statements, so the total describes the page it comes with.
            total = await conn.fetchval(f"SELECT count(*) FROM songs{where}", *args)
            rows = await conn.fetch(
                f"SELECT {_SONG_COLUMNS} FROM songs{where}"
                f" ORDER BY id LIMIT ${n + 1} OFFSET ${n + 2}",
                *args,
                limit,
                offset,
            )
        return SongPage(items=[_song(r) for r in rows], total=total, limit=limit, offset=offset)

    async def update_song(self, song_id: int, fields: dict[str, str | None]) -> Song | None:
        names = editable_changes(fields)
        if not names:
            return await self.get_song(song_id)
        # Column names come from EDITABLE_FIELDS, values are parameters.
        assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(names, start=2))
        async with self._connection() as conn:
            row = await conn.fetchrow(
                f"UPDATE songs SET {assignments} WHERE id = $1 RETURNING {_SONG_COLUMNS}",
                song_id,
                *(fields[name] for name in names),
            )
        return None if row is None else _song(row)

    async def delete_song(self, song_id: int) -> bool:
        async with self._connection() as conn, conn.transaction():
            deleted = await conn.fetchval("DELETE FROM songs WHERE id = $1 RETURNING id", song_id)
            if deleted is None:
                return False
            await conn.execute("DELETE FROM fingerprints WHERE song_id = $1", song_id)
        return True

    async def optimize(self) -> None:
        async with self._connection() as conn:
            # VACUUM cannot run in a transaction block; asyncpg runs a lone statement outside.
            await conn.execute("VACUUM (ANALYZE) fingerprints")
            await conn.execute("ANALYZE songs")

    async def stats(self) -> StoreStats:
        async with self._connection() as conn:
            row = await conn.fetchrow(
                "SELECT count(*) AS songs, coalesce(sum(fingerprint_count), 0) AS fingerprints,"
                " pg_database_size(current_database()) AS database_bytes FROM songs"
            )
        return StoreStats(
            songs=row["songs"],
            fingerprints=int(row["fingerprints"]),
            extra={"database_bytes": row["database_bytes"]},
        )

    # --- the SQS worker's idempotency ledger ------------------------------------------------

    async def get_processed(
        self, bucket: str, key: str, version_token: str
    ) -> ProcessedObject | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(
                f"SELECT {_PROCESSED_COLUMNS} FROM processed_objects"
                " WHERE bucket = $1 AND key = $2 AND version_token = $3",
                bucket,
                key,
                version_token,
            )
        return None if row is None else ProcessedObject(**dict(row))

    async def record_processed(
        self, bucket: str, key: str, version_token: str, kind: str, result_json: str
    ) -> tuple[ProcessedObject, bool]:
        async with self._connection() as conn:
            # ON CONFLICT waits for a concurrent insert of the same key to commit, so of two
            # workers finishing the same redelivered event exactly one becomes the publisher.
            row = await conn.fetchrow(
                "INSERT INTO processed_objects (bucket, key, version_token, kind, result_json)"
                " VALUES ($1, $2, $3, $4, $5::json) ON CONFLICT DO NOTHING"
                f" RETURNING {_PROCESSED_COLUMNS}",
                bucket,
                key,
                version_token,
                kind,
                result_json,
            )
            if row is not None:
                return ProcessedObject(**dict(row)), True
            existing = await conn.fetchrow(
                f"SELECT {_PROCESSED_COLUMNS} FROM processed_objects"
                " WHERE bucket = $1 AND key = $2 AND version_token = $3",
                bucket,
                key,
                version_token,
            )
        if existing is None:  # ledger rows are never deleted by the service
            raise StoreUnavailable("ledger row vanished concurrently; retry")
        return ProcessedObject(**dict(existing)), False

    async def claim_publication(
        self, bucket: str, key: str, version_token: str, lease_s: float
    ) -> bool:
        async with self._connection() as conn:
            claimed = await conn.fetchval(
                "UPDATE processed_objects SET claimed_at = now()"
                " WHERE bucket = $1 AND key = $2 AND version_token = $3"
                " AND published_at IS NULL"
                " AND claimed_at < now() - make_interval(secs => $4)"
                " RETURNING true",
                bucket,
                key,
                version_token,
                float(lease_s),
            )
        return bool(claimed)

    async def mark_published(self, bucket: str, key: str, version_token: str) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "UPDATE processed_objects SET published_at = now()"
                " WHERE bucket = $1 AND key = $2 AND version_token = $3"
                " AND published_at IS NULL",
                bucket,
                key,
                version_token,
            )

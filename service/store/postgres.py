"""The production catalogue: PostgreSQL through one asyncpg pool, plain SQL.

Fingerprints live in two tables (migrations/postgres/0004_postings.sql): `fp_postings`, one row
per hash with its postings packed (service/store/postings.py), and `fingerprints`, a row per
fingerprint, the delta that new songs are COPYed into. `compact()` moves the delta into the
postings in one transaction, by itself once the delta passes `compact_delta_rows`. A lookup
reads both tables in one statement that returns a few byte strings, which numpy turns into
arrays without a Python object per row or posting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import numpy as np

from service.arrays import unique_values
from service.errors import IndexMismatch, StoreUnavailable
from service.store.columns import PROCESSED_COLUMNS, SONG_COLUMNS
from service.store.envelopes import envelope_blob, envelope_slice
from service.store.migrations import list_migrations
from service.store.postgres_streams import PostgresStreamsMixin
from service.store.postings import POSTING_BYTES, POSTING_MAX, SongFrames, decode_lookup
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
from service.store.rules import editable_changes, reject_nul, unique_fingerprints, valid_id

log = logging.getLogger(__name__)

#: pg_advisory_lock key held while migrating, so replicas starting together take turns.
#: Arbitrary but fixed: the bytes of "songdet" as an int64.
MIGRATION_LOCK_KEY = 0x736F6E67646574
#: pg_advisory_xact_lock key held by every transaction that rewrites fp_postings (compaction
#: and purge), so that replicas never compact at the same time.
COMPACTION_LOCK_KEY = MIGRATION_LOCK_KEY + 1

#: Failures that mean "the database cannot be used right now" (TimeoutError, raised by
#: pool.acquire and command_timeout, is an OSError), as opposed to a bug in a statement. A
#: missing database or refused login also belong: the service cannot fix either itself. So do
#: the client's own errors about its connections (InterfaceError: "connection is closed",
#: "pool is closing"; InternalClientError: a connection lost mid-release in a fast shutdown),
#: except those about the arguments of a statement (`_CLIENT_ARGUMENT_ERRORS`).
_UNAVAILABLE: tuple[type[BaseException], ...] = (
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
_CLIENT_ARGUMENT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.DataError,
    asyncpg.exceptions.ClientConfigurationError,
    asyncpg.exceptions.UnsupportedClientFeatureError,
)


def _unavailable(exc: BaseException) -> bool:
    return isinstance(exc, _UNAVAILABLE) and not isinstance(exc, _CLIENT_ARGUMENT_ERRORS)


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


def encode_fingerprint_copy(song_id: int, hashes: np.ndarray, frames: np.ndarray) -> bytes:
    """Binary COPY payload of (hash, song_id, frame) rows, all int4."""
    rows = np.empty(len(hashes), dtype=_INSERT_ROW)
    rows["fields"] = 3
    rows["hash_len"] = rows["song_id_len"] = rows["frame_len"] = 4
    rows["hash"] = hashes
    rows["song_id"] = song_id
    rows["frame"] = frames
    return _COPY_HEADER + rows.tobytes() + _COPY_TRAILER


#: A posting packed in SQL exactly as service/store/postings.py packs it (low 3 bytes, BE).
_PACK_SQL = "substring(int4send({song}) from 2) || substring(int4send({frame}) from 2)"

#: One statement, one snapshot: the postings rows of the wanted hashes (headers and bodies in
#: hash order), the delta rows, and the songs deleted since the last purge. The snapshot makes
#: a concurrent compaction invisible: a fingerprint is either still in the delta or already in
#: its postings, never both or neither.
_LOOKUP_SQL = """
WITH p AS MATERIALIZED (
    SELECT hash, postings FROM fp_postings WHERE hash = ANY($1::int4[])
), d AS MATERIALIZED (
    SELECT hash, song_id, frame FROM fingerprints WHERE hash = ANY($1::int4[])
), counted AS MATERIALIZED (
    SELECT hash, sum(n) AS n FROM (
        SELECT hash, length(postings) / 6 AS n FROM p
        UNION ALL SELECT hash, count(*) FROM d GROUP BY hash
    ) c GROUP BY hash
), frequent AS MATERIALIZED (
    SELECT hash FROM (
        SELECT hash, n, sum(n) OVER (ORDER BY n, hash) AS running FROM counted
    ) r WHERE n > $2::int8 OR running > $3::int8
), kept AS MATERIALIZED (
    SELECT hash, postings FROM p WHERE hash NOT IN (SELECT hash FROM frequent)
)
SELECT
    (SELECT coalesce(string_agg(int4send(hash) || int4send(length(postings)), ''::bytea
                                ORDER BY hash), ''::bytea) FROM kept) AS heads,
    (SELECT coalesce(string_agg(postings, ''::bytea ORDER BY hash), ''::bytea) FROM kept) AS body,
    (SELECT coalesce(string_agg(int4send(hash) || int4send(song_id) || int4send(frame),
                                ''::bytea), ''::bytea)
       FROM d WHERE hash NOT IN (SELECT hash FROM frequent)) AS delta,
    (SELECT coalesce(string_agg(int4send(song_id), ''::bytea), ''::bytea)
       FROM fp_tombstones) AS tombstones
"""

#: max_postings or max_hits when the caller sets none.
_NO_CAP = 1 << 40


def lookup_limits(max_postings: int | None, max_hits: int | None) -> tuple[int, int]:
    """The lookup statement's $2 and $3."""
    return (
        _NO_CAP if max_postings is None else int(max_postings),
        _NO_CAP if max_hits is None else int(max_hits),
    )


#: Move every committed delta row into the postings, in one transaction. Rows COPYed by a
#: concurrent add_song after this statement's snapshot stay in the delta for the next run; a
#: row a concurrent delete_song removes first is skipped (and its song gets a tombstone).
_COMPACT_SQL = f"""
WITH moved AS (
    DELETE FROM fingerprints RETURNING hash, song_id, frame
), merged AS (
    INSERT INTO fp_postings AS p (hash, postings)
    SELECT hash, string_agg({_PACK_SQL.format(song="song_id", frame="frame")}, ''::bytea
                            ORDER BY song_id, frame)
    FROM moved GROUP BY hash
    ON CONFLICT (hash) DO UPDATE SET postings = p.postings || excluded.postings
    RETURNING 1
)
SELECT (SELECT count(*) FROM moved) AS fingerprints, (SELECT count(*) FROM merged) AS hashes
"""

#: Drop the postings of tombstoned songs ($1: their ids as 3-byte big-endian strings) from the
#: rows of one hash range. `position` finds candidate rows at memmem speed (a match at an
#: unaligned offset only costs a needless rewrite); the SET expression reads the row it
#: updates, so a posting appended concurrently is filtered too, never overwritten.
_PURGE_SQL = f"""
UPDATE fp_postings p SET postings = (
    SELECT coalesce(string_agg(substring(p.postings from i for {POSTING_BYTES}), ''::bytea
                               ORDER BY i), ''::bytea)
    FROM generate_series(1, length(p.postings), {POSTING_BYTES}) AS i
    WHERE NOT substring(p.postings from i for 3) = ANY($1::bytea[])
)
WHERE p.hash >= $2 AND p.hash <= $3
  AND EXISTS (SELECT 1 FROM unnest($1::bytea[]) AS t(song)
              WHERE position(t.song in p.postings) > 0)
"""

#: Postings rows rewritten per purge transaction.
_PURGE_BATCH_ROWS = 100_000


async def _set_envelope(
    conn: asyncpg.Connection, song_id: int, envelope: np.ndarray, envelope_format: int
) -> None:
    """Store a song's band envelopes unless it has some of this format (add_song's new song
    has none). The song may be deleted meanwhile: the row is inserted only while it exists
    (the foreign key would refuse it anyway, with an error nobody needs)."""
    await conn.execute(
        "INSERT INTO song_envelopes (song_id, format, bands, envelope)"
        " SELECT id, $2, $3, $4 FROM songs WHERE id = $1"
        " ON CONFLICT (song_id) DO UPDATE SET format = excluded.format,"
        " bands = excluded.bands, envelope = excluded.envelope"
        " WHERE song_envelopes.format <> excluded.format",
        song_id,
        envelope_format,
        envelope.shape[1],
        envelope_blob(envelope),
    )


def _song(row: asyncpg.Record) -> Song:
    return Song(**dict(row))


def _like_pattern(text: str) -> str:
    """Substring pattern for ILIKE matching `text` literally (its % and _ included)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class CachedTotal:
    """A catalogue-wide count read from the database at most once per `ttl_s` and adjusted
    in between by this process's own adds and deletes: other processes' changes show within
    the ttl, which is all its users (the frequent-hash cap) need."""

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
        stall_timeout_s: float = 5.0,
        migrations_dir: Path | None = None,
        compact_delta_rows: int = 1_000_000,
    ) -> None:
        self._dsn = dsn
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
        self._version_checked = False
        #: Delta rows above which add_song starts a background compaction (0: never).
        self._compact_delta_rows = compact_delta_rows
        #: Delta rows this process believes are waiting (its own adds since its last compaction).
        self._delta_rows = 0
        self._background: asyncio.Task[CompactionResult] | None = None
        self._song_frames = SongFrames()
        self._fingerprint_total = CachedTotal()

    # --- lifecycle --------------------------------------------------------------------------

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=self._pool_min_size,
                max_size=self._pool_max_size,
                command_timeout=self._stall_timeout_s,
                timeout=self._stall_timeout_s,
            )
        except Exception as exc:
            if _unavailable(exc):
                raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
            raise
        try:
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

    async def _load_song_frames(self) -> None:
        """Every song's length, read once at start: the chance model needs the length of each
        song a lookup meets, and a new process would otherwise ask for them a few thousand
        at a time during its first identifications (15 ms each at 10,000 songs). Songs added
        later by other processes are still fetched when first met. 8 bytes per song."""
        async with self._connection() as conn:
            rows = await conn.fetch("SELECT id, n_frames FROM songs")
        if rows:
            self._song_frames.add(
                np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)),
                np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows)),
            )

    async def close(self) -> None:
        task, self._background = self._background, None
        if task is not None and not task.done():
            # Cancelling rolls the compaction back; the delta stays for the next one.
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection, or a one-off one before `open()`; unreachable ->
        StoreUnavailable."""
        try:
            if self._pool is not None:
                async with self._pool.acquire(timeout=self._stall_timeout_s) as conn:
                    yield conn
            else:
                conn = await asyncpg.connect(
                    self._dsn,
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
            if _unavailable(exc):
                raise StoreUnavailable(
                    f"PostgreSQL unavailable: {exc or type(exc).__name__}"
                ) from exc
            raise

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
        """Migrated and of our fingerprint version; StoreUnavailable within the stall timeout
        when the database does not answer."""
        try:
            async with asyncio.timeout(self._stall_timeout_s):
                if await self._pending():
                    return False
                if not self._version_checked:
                    await self._check_version()
                return True
        except TimeoutError as exc:
            raise StoreUnavailable(
                f"PostgreSQL did not answer within {self._stall_timeout_s:g} s"
            ) from exc

    # --- songs ------------------------------------------------------------------------------

    async def add_song(self, song: NewSong) -> tuple[Song, bool]:
        meta = song.meta
        reject_nul(meta.title, meta.artist, meta.album, meta.isrc, meta.external_id)
        hashes, frames = unique_fingerprints(song.fingerprints)
        meta = song.meta
        async with self._connection() as conn, conn.transaction():
            # ON CONFLICT waits for a concurrent insert of the same content to finish, so two
            # uploads of one file yield one song whichever commits first.
            row = await conn.fetchrow(
                "INSERT INTO songs (title, artist, album, isrc, external_id, duration_s,"
                " n_frames, content_sha256, fingerprint_count)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                f" ON CONFLICT (content_sha256) DO NOTHING RETURNING {SONG_COLUMNS}",
                meta.title,
                meta.artist,
                meta.album,
                meta.isrc,
                meta.external_id,
                song.duration_s,
                song.n_frames,
                song.content_sha256,
                len(hashes),
                timeout=self._command_timeout_s,
            )
            if row is None:
                existing = await conn.fetchrow(
                    f"SELECT {SONG_COLUMNS} FROM songs WHERE content_sha256 = $1",
                    song.content_sha256,
                )
                if existing is None:  # the other song was deleted in between
                    raise StoreUnavailable("song changed concurrently; retry")
                return _song(existing), False
            if row["id"] > POSTING_MAX:
                raise StoreUnavailable(f"song ids beyond {POSTING_MAX} cannot be stored")
            if len(hashes):
                await conn.copy_to_table(
                    "fingerprints",
                    # memoryview, not bytes: asyncpg would take bytes for a file name.
                    source=memoryview(encode_fingerprint_copy(row["id"], hashes, frames)),
                    columns=["hash", "song_id", "frame"],
                    format="binary",
                    timeout=self._command_timeout_s,
                )
            if song.envelope is not None and song.envelope.size:
                await _set_envelope(conn, row["id"], song.envelope, song.envelope_format)
        self._song_frames.add(np.array([row["id"]]), np.array([song.n_frames]))
        self._fingerprint_total.adjust(len(hashes))
        self._delta_rows += len(hashes)
        self._maybe_compact_in_background()
        return _song(row), True

    async def find_by_content(self, content_sha256: str) -> Song | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(
                f"SELECT {SONG_COLUMNS} FROM songs WHERE content_sha256 = $1", content_sha256
            )
        return None if row is None else _song(row)

    async def lookup(
        self, hashes: np.ndarray, max_postings: int | None = None, max_hits: int | None = None
    ) -> Hits:
        wanted = unique_values(np.asarray(hashes, dtype=np.int32))
        if len(wanted) == 0:
            return Hits.empty()
        async with self._connection() as conn:
            # A prepared statement (asyncpg caches it per connection): one round trip. A hash
            # over the cap or past the budget (compacted postings, whose length is known
            # without reading them, plus uncompacted rows) is left out whole.
            row = await conn.fetchrow(
                _LOOKUP_SQL, wanted.tolist(), *lookup_limits(max_postings, max_hits)
            )
            # Millions of hits at catalogue scale: decode them off the event loop, or health
            # checks and every other request wait behind it.
            found, song_ids, frames, missing = await asyncio.to_thread(
                self._decode_lookup, row["heads"], row["body"], row["delta"], row["tombstones"]
            )
            if len(missing):
                # Only for songs this process has not met yet (new in another process, or
                # before its first lookups); a song deleted meanwhile stays unknown, and drops.
                known = await conn.fetch(
                    "SELECT id, n_frames FROM songs WHERE id = ANY($1::int4[])", missing.tolist()
                )
                self._song_frames.add(
                    np.array([r["id"] for r in known], dtype=np.int64),
                    np.array([r["n_frames"] for r in known], dtype=np.int64),
                )
        return await asyncio.to_thread(self._song_frames.hits, found, song_ids, frames)

    def _decode_lookup(
        self, heads: bytes, body: bytes, delta: bytes, tombstones: bytes
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The lookup's hits and the ids among them whose song length is not cached yet."""
        found, song_ids, frames = decode_lookup(heads, body, delta, tombstones)
        return found, song_ids, frames, self._song_frames.missing(song_ids)

    async def set_song_envelope(
        self, song_id: int, envelope: np.ndarray, envelope_format: int
    ) -> None:
        if not envelope.size:
            return
        async with self._connection() as conn:
            await _set_envelope(conn, song_id, envelope, envelope_format)

    async def song_envelopes(
        self, ranges: list[EnvelopeRange], envelope_format: int
    ) -> dict[int, EnvelopeSlice]:
        if not ranges:
            return {}
        async with self._connection() as conn:
            # substring() of an EXTERNAL (uncompressed) value reads only the chunks it needs.
            rows = await conn.fetch(
                "SELECT e.song_id, e.bands, r.first,"
                " substring(e.envelope FROM r.first * e.bands + 1"
                " FOR (r.last - r.first) * e.bands) AS part"
                " FROM unnest($1::int4[], $2::int4[], $3::int4[]) AS r (song_id, first, last)"
                " JOIN song_envelopes e ON e.song_id = r.song_id AND e.format = $4",
                [r.song_id for r in ranges],
                [max(0, r.first) for r in ranges],
                [max(0, r.last) for r in ranges],
                envelope_format,
            )
        return {
            row["song_id"]: envelope_slice(row["part"], row["bands"], row["first"]) for row in rows
        }

    async def get_song(self, song_id: int) -> Song | None:
        if not valid_id(song_id):
            return None
        async with self._connection() as conn:
            row = await conn.fetchrow(f"SELECT {SONG_COLUMNS} FROM songs WHERE id = $1", song_id)
        return None if row is None else _song(row)

    async def get_songs(self, song_ids: list[int]) -> dict[int, Song]:
        if not song_ids:
            return {}
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"SELECT {SONG_COLUMNS} FROM songs WHERE id = ANY($1::int4[])",
                sorted(set(song_ids)),
            )
        return {row["id"]: _song(row) for row in rows}

    async def list_songs(self, limit: int, offset: int, query: str | None = None) -> SongPage:
        reject_nul(query)
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
                f"SELECT {SONG_COLUMNS} FROM songs{where}"
                f" ORDER BY id LIMIT ${n + 1} OFFSET ${n + 2}",
                *args,
                limit,
                offset,
            )
        return SongPage(items=[_song(r) for r in rows], total=total, limit=limit, offset=offset)

    async def update_song(self, song_id: int, fields: dict[str, str | None]) -> Song | None:
        names = editable_changes(fields)
        if not names or not valid_id(song_id):
            return await self.get_song(song_id)
        # Column names come from EDITABLE_FIELDS, values are parameters.
        assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(names, start=2))
        async with self._connection() as conn:
            row = await conn.fetchrow(
                f"UPDATE songs SET {assignments} WHERE id = $1 RETURNING {SONG_COLUMNS}",
                song_id,
                *(fields[name] for name in names),
            )
        return None if row is None else _song(row)

    async def delete_song(self, song_id: int) -> bool:
        if not valid_id(song_id):
            return False
        async with self._connection() as conn, conn.transaction():
            count = await conn.fetchval(
                "DELETE FROM songs WHERE id = $1 RETURNING fingerprint_count", song_id
            )
            if count is None:
                return False
            status = await conn.execute("DELETE FROM fingerprints WHERE song_id = $1", song_id)
            if int(status.split()[-1]) < count:
                # Some of its fingerprints were compacted into postings (maybe by a compaction
                # committing just now): lookups must drop them until a purge removes them.
                await conn.execute(
                    "INSERT INTO fp_tombstones (song_id) VALUES ($1) ON CONFLICT DO NOTHING",
                    song_id,
                )
        self._fingerprint_total.adjust(-int(count))
        return True

    async def fingerprint_total(self) -> int:
        total = self._fingerprint_total.fresh()
        if total is None:
            async with self._connection() as conn:
                total = int(
                    await conn.fetchval("SELECT coalesce(sum(fingerprint_count), 0) FROM songs")
                )
            self._fingerprint_total.set(total)
        return total

    async def optimize(self) -> None:
        await self.compact(purge=True)
        async with self._connection() as conn:
            # VACUUM cannot run in a transaction block; asyncpg runs a lone statement outside.
            # It also reclaims the delta rows compaction just moved.
            await conn.execute("VACUUM (ANALYZE) fingerprints, fp_postings, fp_tombstones")
            await conn.execute("ANALYZE songs")

    # --- compaction -------------------------------------------------------------------------

    @asynccontextmanager
    async def _maintenance_connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection of its own, without statement timeout: compacting a large delta or
        purging a large catalogue takes what it takes, and must not hold a pool slot."""
        try:
            conn = await asyncpg.connect(self._dsn, timeout=self._command_timeout_s)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
        try:
            yield conn
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"PostgreSQL unavailable while compacting: {exc}") from exc
        finally:
            await conn.close()

    async def compact(self, purge: bool = False, wait: bool = True) -> CompactionResult:
        """Move the delta into the postings; with `purge`, also drop the postings of deleted
        songs and their tombstones. `wait=False` gives up at once when another process is
        compacting (the background trigger uses it)."""
        async with self._maintenance_connection() as conn:
            async with conn.transaction():
                if wait:
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", COMPACTION_LOCK_KEY)
                elif not await conn.fetchval(
                    "SELECT pg_try_advisory_xact_lock($1)", COMPACTION_LOCK_KEY
                ):
                    return CompactionResult(skipped=True)
                self._delta_rows = 0
                moved = await conn.fetchrow(_COMPACT_SQL)
            purged = await self._purge(conn) if purge else 0
        log.info(
            "compacted %d fingerprints into %d hashes; purged %d deleted songs",
            moved["fingerprints"],
            moved["hashes"],
            purged,
        )
        return CompactionResult(
            fingerprints=moved["fingerprints"], hashes=moved["hashes"], purged_songs=purged
        )

    async def _purge(self, conn: asyncpg.Connection) -> int:
        """Remove tombstoned songs from every postings row, a batch of rows per transaction,
        then their tombstones; returns how many songs were purged."""
        dead = [r["song_id"] for r in await conn.fetch("SELECT song_id FROM fp_tombstones")]
        if not dead:
            return 0
        patterns = [song_id.to_bytes(3, "big") for song_id in dead]
        low = -(2**31)
        while True:
            # Batch bounds from the primary key alone (an index-only walk).
            high = await conn.fetchval(
                "SELECT hash FROM fp_postings WHERE hash >= $1 ORDER BY hash OFFSET $2 LIMIT 1",
                low,
                _PURGE_BATCH_ROWS,
            )
            last = 2**31 - 1 if high is None else high - 1
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", COMPACTION_LOCK_KEY)
                await conn.execute(_PURGE_SQL, patterns, low, last)
                await conn.execute(
                    "DELETE FROM fp_postings WHERE hash >= $1 AND hash <= $2"
                    " AND length(postings) = 0",
                    low,
                    last,
                )
            if high is None:
                break
            low = high
        await conn.execute("DELETE FROM fp_tombstones WHERE song_id = ANY($1::int4[])", dead)
        return len(dead)

    def _maybe_compact_in_background(self) -> None:
        """Start one background compaction once this process has added enough to the delta.

        Lookups read the delta through a b-tree that grows with it, and the delta costs about
        six times the bytes of postings, so it is kept small without the caller waiting.
        """
        if not self._compact_delta_rows or self._delta_rows < self._compact_delta_rows:
            return
        if self._background is not None and not self._background.done():
            return
        self._background = asyncio.get_running_loop().create_task(self._compact_logged())

    async def _compact_logged(self) -> CompactionResult:
        try:
            return await self.compact(wait=False)
        except Exception:
            log.exception("background compaction failed; the delta stays for the next one")
            return CompactionResult(skipped=True)

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
                f"SELECT {PROCESSED_COLUMNS} FROM processed_objects"
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
                f" RETURNING {PROCESSED_COLUMNS}",
                bucket,
                key,
                version_token,
                kind,
                result_json,
            )
            if row is not None:
                return ProcessedObject(**dict(row)), True
            existing = await conn.fetchrow(
                f"SELECT {PROCESSED_COLUMNS} FROM processed_objects"
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

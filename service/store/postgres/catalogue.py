"""Songs, their fingerprints and band envelopes in PostgreSQL.

A song row, its fingerprints (COPYed into the delta) and its envelopes are written in one
transaction, so the catalogue never holds half a song; deleting a song whose fingerprints were
compacted already leaves a tombstone that lookups honour until a purge.
"""

from __future__ import annotations

import asyncpg
import numpy as np

from service.errors import StoreUnavailable
from service.store.columns import SONG_COLUMNS
from service.store.envelopes import envelope_blob, envelope_slice
from service.store.postgres.compaction import PostgresCompaction
from service.store.postgres.copy_format import encode_fingerprint_copy
from service.store.postgres.lookup import PostgresLookup
from service.store.postings import POSTING_MAX
from service.store.records import (
    EnvelopeRange,
    EnvelopeSlice,
    NewSong,
    Song,
    SongPage,
    StoreStats,
)
from service.store.rules import editable_changes, reject_nul, unique_fingerprints, valid_id


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


class PostgresCatalogue(PostgresLookup, PostgresCompaction):
    """Songs: adding (row, fingerprints and envelopes in one transaction), reading, editing,
    deleting, and their band envelopes."""

    async def add_song(self, song: NewSong) -> tuple[Song, bool]:
        meta = song.meta
        reject_nul(meta.title, meta.artist, meta.album, meta.isrc, meta.external_id, song.source)
        hashes, frames = unique_fingerprints(song.fingerprints)
        meta = song.meta
        async with self._connection() as conn, conn.transaction():
            # ON CONFLICT waits for a concurrent insert of the same content to finish, so two
            # uploads of one file yield one song whichever commits first.
            # An explicit id (a catalogue rebuilt by `reindex`) overrides the identity column;
            # reindex moves the identity past the highest id when it is done.
            values: dict[str, object] = {
                "title": meta.title,
                "artist": meta.artist,
                "album": meta.album,
                "isrc": meta.isrc,
                "external_id": meta.external_id,
                "duration_s": song.duration_s,
                "n_frames": song.n_frames,
                "content_sha256": song.content_sha256,
                "fingerprint_count": len(hashes),
                "source": song.source,
                "file_sha256": song.file_sha256,
            }
            overriding = ""
            if song.song_id is not None:
                values["id"] = song.song_id
                overriding = " OVERRIDING SYSTEM VALUE"
            places = ", ".join(f"${i}" for i in range(1, len(values) + 1))
            row = await conn.fetchrow(
                f"INSERT INTO songs ({', '.join(values)}){overriding} VALUES ({places})"
                f" ON CONFLICT (content_sha256) DO NOTHING RETURNING {SONG_COLUMNS}",
                *values.values(),
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
        self._catalogue_frames.adjust(int(song.n_frames))
        self._delta_rows += len(hashes)
        self._maybe_compact_in_background()
        return _song(row), True

    async def find_by_content(self, content_sha256: str) -> Song | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(
                f"SELECT {SONG_COLUMNS} FROM songs WHERE content_sha256 = $1", content_sha256
            )
        return None if row is None else _song(row)

    async def find_by_source(self, source: str) -> Song | None:
        reject_nul(source)
        async with self._connection() as conn:
            row = await conn.fetchrow(
                f"SELECT {SONG_COLUMNS} FROM songs WHERE source = $1 ORDER BY id LIMIT 1", source
            )
        return None if row is None else _song(row)

    async def songs_after(self, after_id: int, limit: int) -> list[Song]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"SELECT {SONG_COLUMNS} FROM songs WHERE id > $1 ORDER BY id LIMIT $2",
                after_id,
                limit,
            )
        return [_song(r) for r in rows]

    async def highest_song_id(self) -> int:
        async with self._connection() as conn:
            return int(
                await conn.fetchval(
                    "SELECT greatest(coalesce(max(id), 0), coalesce(pg_sequence_last_value("
                    "pg_get_serial_sequence('songs', 'id')::regclass), 0)) FROM songs"
                )
            )

    async def sync_song_ids(self, at_least: int = 0) -> None:
        async with self._connection() as conn:
            # Never lower: an id handed out once (a song since deleted) stays unused.
            await conn.execute(
                "WITH seq AS (SELECT pg_get_serial_sequence('songs', 'id') AS name),"
                " top AS (SELECT greatest(coalesce(max(id), 0), $1,"
                " coalesce(pg_sequence_last_value((SELECT name FROM seq)::regclass), 0)) AS id"
                " FROM songs)"
                " SELECT setval((SELECT name FROM seq), greatest(top.id, 1), top.id > 0) FROM top",
                int(at_least),
            )

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
        async with self._read_connection() as conn:
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
        async with self._read_connection() as conn:
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
            deleted = await conn.fetchrow(
                "DELETE FROM songs WHERE id = $1 RETURNING fingerprint_count, n_frames", song_id
            )
            if deleted is None:
                return False
            count = deleted["fingerprint_count"]
            status = await conn.execute("DELETE FROM fingerprints WHERE song_id = $1", song_id)
            if int(status.split()[-1]) < count:
                # Some of its fingerprints were compacted into postings (maybe by a compaction
                # committing just now): lookups must drop them until a purge removes them.
                await conn.execute(
                    "INSERT INTO fp_tombstones (song_id) VALUES ($1) ON CONFLICT DO NOTHING",
                    song_id,
                )
        self._fingerprint_total.adjust(-int(count))
        self._catalogue_frames.adjust(-int(deleted["n_frames"]))
        return True

    async def stats(self) -> StoreStats:
        async with self._connection() as conn:
            row = await conn.fetchrow(
                "SELECT count(*) AS songs, coalesce(sum(fingerprint_count), 0) AS fingerprints,"
                " coalesce(sum(duration_s), 0) AS audio_s,"
                " pg_database_size(current_database()) AS database_bytes FROM songs"
            )
        return StoreStats(
            songs=row["songs"],
            fingerprints=int(row["fingerprints"]),
            extra={"database_bytes": row["database_bytes"]},
            audio_s=float(row["audio_s"]),
        )

"""Songs, their fingerprints and band envelopes in SQLite.

A row per fingerprint and no delta: a laptop catalogue is small enough that SQLite's b-tree
is both the write path and the index. A song row, its fingerprints and its envelopes are
written in one transaction, so the catalogue never holds half a song.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from datetime import datetime

import numpy as np

from service.arrays import unique_values
from service.store.columns import SONG_COLUMNS
from service.store.envelopes import envelope_blob, envelope_slice
from service.store.records import (
    CompactionResult,
    EnvelopeRange,
    EnvelopeSlice,
    Hits,
    NewSong,
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
from service.store.sqlite.connection import SqliteBase, transaction


def _song(row: sqlite3.Row) -> Song:
    values = dict(zip(row.keys(), row, strict=True))
    values["created_at"] = datetime.fromisoformat(values["created_at"])
    # SQLite hands back a whole REAL as an int from RETURNING.
    values["duration_s"] = float(values["duration_s"])
    return Song(**values)


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


class SqliteCatalogue(SqliteBase):
    """Songs: adding (row, fingerprints and envelopes in one transaction), lookups, reading,
    editing, deleting, and their band envelopes."""

    async def add_song(self, song: NewSong) -> tuple[Song, bool]:
        meta = song.meta
        reject_nul(meta.title, meta.artist, meta.album, meta.isrc, meta.external_id, song.source)
        return await self._run(self._add_song, song)

    def _add_song(self, conn: sqlite3.Connection, song: NewSong) -> tuple[Song, bool]:
        hashes, frames = unique_fingerprints(song.fingerprints)
        meta = song.meta
        with transaction(conn):
            rows = conn.execute(
                "INSERT INTO songs (id, title, artist, album, isrc, external_id, duration_s,"
                " n_frames, content_sha256, fingerprint_count, source, file_sha256)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                f" ON CONFLICT (content_sha256) DO NOTHING RETURNING {SONG_COLUMNS}",
                (
                    song.song_id,  # NULL: the next id
                    meta.title,
                    meta.artist,
                    meta.album,
                    meta.isrc,
                    meta.external_id,
                    float(song.duration_s),
                    int(song.n_frames),
                    song.content_sha256,
                    len(hashes),
                    song.source,
                    song.file_sha256,
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

    async def find_by_source(self, source: str) -> Song | None:
        reject_nul(source)
        return await self._run(self._find_by_source, source)

    def _find_by_source(self, conn: sqlite3.Connection, source: str) -> Song | None:
        row = conn.execute(
            f"SELECT {SONG_COLUMNS} FROM songs WHERE source = ? ORDER BY id LIMIT 1", (source,)
        ).fetchone()
        return None if row is None else _song(row)

    async def songs_after(self, after_id: int, limit: int) -> list[Song]:
        return await self._run(self._songs_after, after_id, limit)

    def _songs_after(self, conn: sqlite3.Connection, after_id: int, limit: int) -> list[Song]:
        rows = conn.execute(
            f"SELECT {SONG_COLUMNS} FROM songs WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit),
        ).fetchall()
        return [_song(r) for r in rows]

    async def highest_song_id(self) -> int:
        return await self._run(self._highest_song_id)

    def _highest_song_id(self, conn: sqlite3.Connection) -> int:
        row = conn.execute(
            "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'songs'), 0),"
            " coalesce((SELECT max(id) FROM songs), 0))"
        ).fetchone()
        return int(row[0])

    async def sync_song_ids(self, at_least: int = 0) -> None:
        # AUTOINCREMENT records the highest id ever inserted, explicit ones included.
        await self._run(self._sync_song_ids, int(at_least))

    def _sync_song_ids(self, conn: sqlite3.Connection, at_least: int) -> None:
        with transaction(conn):
            conn.execute(
                "INSERT INTO sqlite_sequence (name, seq) SELECT 'songs', ?"
                " WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'songs')",
                (at_least,),
            )
            conn.execute(
                "UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'songs'", (at_least,)
            )

    async def lookup(
        self, hashes: np.ndarray, max_postings: int | None = None, max_hits: int | None = None
    ) -> Hits:
        wanted = unique_values(np.asarray(hashes, dtype=np.int32))
        if len(wanted) == 0:
            return Hits.empty()
        hits = await self._run(self._lookup, json.dumps(wanted.tolist()))
        hits = drop_frequent(hits, max_postings, max_hits)
        if not len(hits.left_out):
            return hits
        frames = await self._run(
            lambda conn: int(
                conn.execute("SELECT coalesce(sum(n_frames), 0) FROM songs").fetchone()[0]
            )
        )
        return replace(hits, left_out=replace(hits.left_out, catalogue_frames=frames))

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
        with transaction(conn):
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
        with transaction(conn, "DEFERRED"):
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
        with transaction(conn):
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
        songs, fingerprints, audio_s = conn.execute(
            "SELECT count(*), coalesce(sum(fingerprint_count), 0), coalesce(sum(duration_s), 0)"
            " FROM songs"
        ).fetchone()
        (database_bytes,) = conn.execute(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()"
        ).fetchone()
        return StoreStats(
            songs=songs,
            fingerprints=fingerprints,
            extra={"database_bytes": database_bytes},
            audio_s=float(audio_s),
        )

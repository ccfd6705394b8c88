"""The live-stream tables in SQLite: segments, window matches, plays and their events.

All statements run on the store's one thread, and every write is one `BEGIN IMMEDIATE`
transaction. A recomputation reads, matches and then writes, with awaits in between, so the
per-stream lock is an asyncio lock of this store: enough for the one process a SQLite
deployment runs (PostgreSQL is the choice for several workers).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from service.store.columns import PLAY_COLUMNS, SEGMENT_COLUMNS, STREAM_COLUMNS
from service.store.records import (
    PLAY_FIELDS,
    NewStream,
    Play,
    PlayPage,
    StreamEvent,
    StreamSegment,
    StreamState,
    StreamUpdate,
    StreamWindow,
)
from service.store.rules import reject_nul
from service.store.sqlite.connection import NOW, SqliteBase

_REALS = (
    "start_s",
    "end_s",
    "song_start_s",
    "song_end_s",
    "speed",
    "confidence",
    "overlap_in_s",
    "overlap_out_s",
)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _values(row: sqlite3.Row) -> dict[str, Any]:
    return dict(zip(row.keys(), row, strict=True))


def _stream(row: sqlite3.Row) -> StreamState:
    v = _values(row)
    for name in ("wall_origin", "last_segment_at", "created_at"):
        v[name] = datetime.fromisoformat(v[name])
    v["pts_epoch_s"], v["max_end_s"] = float(v["pts_epoch_s"]), float(v["max_end_s"])
    return StreamState(**v)


def _play(row: sqlite3.Row) -> Play:
    v = _values(row)
    v["created_at"] = datetime.fromisoformat(v["created_at"])
    v["updated_at"] = datetime.fromisoformat(v["updated_at"])
    for name in _REALS:  # a whole REAL comes back as an int
        v[name] = float(v[name])
    v["announced"] = bool(v["announced"])
    return Play(**v)


def _segment(row: sqlite3.Row) -> StreamSegment:
    v = _values(row)
    v["start_s"], v["duration_s"] = float(v["start_s"]), float(v["duration_s"])
    v["pts_s"] = None if v["pts_s"] is None else float(v["pts_s"])
    v["peaks"] = bytes(v["peaks"])
    v["envelope"] = bytes(v["envelope"])
    v["sustained_peaks"] = bytes(v["sustained_peaks"])
    return StreamSegment(**v)


class SqliteStreams(SqliteBase):
    """Streams, their segments, window matches, plays and outbox events."""

    def stream_lock(self, name: str) -> AbstractAsyncContextManager[None]:
        return self._stream_lock(name)

    @asynccontextmanager
    async def _stream_lock(self, name: str) -> AsyncIterator[None]:
        lock = self._stream_locks.setdefault(name, asyncio.Lock())
        async with lock:
            yield

    async def get_stream(self, name: str) -> StreamState | None:
        reject_nul(name)
        return await self._run(self._get_stream, name)

    def _get_stream(self, conn: sqlite3.Connection, name: str) -> StreamState | None:
        row = conn.execute(f"SELECT {STREAM_COLUMNS} FROM streams WHERE name = ?", (name,))
        found = row.fetchone()
        return None if found is None else _stream(found)

    async def ensure_stream(self, stream: NewStream) -> StreamState:
        reject_nul(stream.name)
        return await self._run(self._ensure_stream, stream)

    def _ensure_stream(self, conn: sqlite3.Connection, stream: NewStream) -> StreamState:
        conn.execute(
            "INSERT INTO streams (name, pts_epoch_s, wall_origin, max_end_s, last_sequence,"
            " last_key) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
            (
                stream.name,
                float(stream.pts_epoch_s),
                _iso(stream.wall_origin),
                float(stream.max_end_s),
                int(stream.last_sequence),
                stream.last_key,
            ),
        )
        found = self._get_stream(conn, stream.name)
        assert found is not None
        return found

    async def list_streams(self) -> list[StreamState]:
        return await self._run(
            lambda conn: [
                _stream(r)
                for r in conn.execute(f"SELECT {STREAM_COLUMNS} FROM streams ORDER BY name")
            ]
        )

    async def stream_segments(
        self, stream_id: int, start_from_s: float, start_to_s: float
    ) -> list[StreamSegment]:
        return await self._run(
            lambda conn: [
                _segment(r)
                for r in conn.execute(
                    f"SELECT {SEGMENT_COLUMNS} FROM stream_segments WHERE stream_id = ?"
                    " AND start_s BETWEEN ? AND ? ORDER BY start_s, sequence",
                    (stream_id, float(start_from_s), float(start_to_s)),
                )
            ]
        )

    async def unannounced_plays(self, stream_id: int) -> list[Play]:
        return await self._run(
            lambda conn: [
                _play(r)
                for r in conn.execute(
                    f"SELECT {PLAY_COLUMNS} FROM stream_plays WHERE stream_id = ?"
                    " AND NOT announced AND status <> 'retracted' ORDER BY start_s, id",
                    (stream_id,),
                )
            ]
        )

    async def segment_spans(
        self, stream_id: int, from_s: float, to_s: float
    ) -> list[tuple[int, float, float]]:
        return await self._run(
            lambda conn: [
                (int(r[0]), float(r[1]), float(r[2]))
                for r in conn.execute(
                    "SELECT sequence, start_s, start_s + duration_s FROM stream_segments"
                    " WHERE stream_id = ? AND start_s + duration_s >= ? AND start_s <= ?"
                    " ORDER BY start_s, sequence",
                    (stream_id, float(from_s), float(to_s)),
                )
            ]
        )

    async def stream_windows(
        self, stream_id: int, first_index: int, last_index: int
    ) -> list[StreamWindow]:
        return await self._run(
            lambda conn: [
                StreamWindow(r["window_index"], r["matches"])
                for r in conn.execute(
                    "SELECT window_index, matches FROM stream_windows WHERE stream_id = ?"
                    " AND window_index BETWEEN ? AND ? ORDER BY window_index",
                    (stream_id, int(first_index), int(last_index)),
                )
            ]
        )

    async def stream_plays(
        self, stream_id: int, from_s: float, to_s: float, *, playing_only: bool = False
    ) -> list[Play]:
        status = "status = 'playing'" if playing_only else "status <> 'retracted'"
        return await self._run(
            lambda conn: [
                _play(r)
                for r in conn.execute(
                    f"SELECT {PLAY_COLUMNS} FROM stream_plays WHERE stream_id = ?"
                    f" AND {status} AND end_s >= ? AND start_s <= ?"
                    " ORDER BY start_s, id",
                    (stream_id, float(from_s), float(to_s)),
                )
            ]
        )

    async def list_plays(
        self,
        stream_id: int,
        *,
        from_s: float | None,
        to_s: float | None,
        limit: int,
        offset: int,
        include_retracted: bool = False,
    ) -> PlayPage:
        where = ["stream_id = :stream_id"]
        args: dict[str, Any] = {"stream_id": stream_id, "limit": limit, "offset": offset}
        if from_s is not None:
            where.append("end_s > :from_s")
            args["from_s"] = float(from_s)
        if to_s is not None:
            where.append("start_s < :to_s")
            args["to_s"] = float(to_s)
        if not include_retracted:
            where.append("status <> 'retracted'")
        clause = " AND ".join(where)

        def run(conn: sqlite3.Connection) -> PlayPage:
            conn.execute("BEGIN DEFERRED")  # one snapshot for the count and the page
            try:
                total = conn.execute(
                    f"SELECT count(*) FROM stream_plays WHERE {clause}", args
                ).fetchone()[0]
                rows = conn.execute(
                    f"SELECT {PLAY_COLUMNS} FROM stream_plays WHERE {clause}"
                    " ORDER BY start_s, id LIMIT :limit OFFSET :offset",
                    args,
                ).fetchall()
            finally:
                conn.execute("COMMIT")
            return PlayPage([_play(r) for r in rows], total, limit, offset)

        return await self._run(run)

    async def get_play(self, stream_id: int, play_id: int) -> Play | None:
        def run(conn: sqlite3.Connection) -> Play | None:
            row = conn.execute(
                f"SELECT {PLAY_COLUMNS} FROM stream_plays WHERE stream_id = ? AND id = ?",
                (stream_id, play_id),
            ).fetchone()
            return None if row is None else _play(row)

        return await self._run(run)

    async def current_plays(self, stream_ids: list[int]) -> dict[int, Play]:
        if not stream_ids:
            return {}

        def run(conn: sqlite3.Connection) -> dict[int, Play]:
            rows = conn.execute(
                f"SELECT {PLAY_COLUMNS} FROM stream_plays WHERE status = 'playing'"
                " AND stream_id IN (SELECT value FROM json_each(?))"
                " ORDER BY stream_id, start_s, id",
                (json.dumps(sorted(set(stream_ids))),),
            ).fetchall()
            return {r["stream_id"]: _play(r) for r in rows}  # the last one per stream wins

        return await self._run(run)

    async def apply_stream_update(self, update: StreamUpdate) -> list[int]:
        return await self._run(self._apply_stream_update, update)

    def _apply_stream_update(self, conn: sqlite3.Connection, update: StreamUpdate) -> list[int]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if update.segment is not None:
                _write_segment(conn, update.stream_id, update.segment)
            conn.executemany(
                "INSERT INTO stream_windows (stream_id, window_index, matches) VALUES (?, ?, ?)"
                " ON CONFLICT (stream_id, window_index)"
                f" DO UPDATE SET matches = excluded.matches, updated_at = {NOW}",
                [(update.stream_id, int(w.index), w.matches_json) for w in update.windows],
            )
            new_ids = _write_plays(conn, update)
            _write_events(conn, update, new_ids)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return new_ids

    async def idle_streams(self, timeout_s: float) -> list[StreamState]:
        return await self._run(
            lambda conn: [
                _stream(r)
                for r in conn.execute(
                    f"SELECT {STREAM_COLUMNS} FROM streams s"
                    " WHERE last_segment_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?)"
                    " AND EXISTS (SELECT 1 FROM stream_plays p WHERE p.stream_id = s.id"
                    " AND p.status = 'playing') ORDER BY name",
                    (f"-{float(timeout_s):.3f} seconds",),
                )
            ]
        )

    async def prune_stream(self, stream_id: int, before_s: float, below_window: int) -> int:
        def run(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            try:
                dropped = conn.execute(
                    "DELETE FROM stream_segments WHERE stream_id = ? AND start_s + duration_s < ?",
                    (stream_id, float(before_s)),
                ).rowcount
                conn.execute(
                    "DELETE FROM stream_windows WHERE stream_id = ? AND window_index < ?",
                    (stream_id, int(below_window)),
                )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return dropped

        return await self._run(run)

    async def pending_stream_events(self, stream_id: int | None = None) -> list[StreamEvent]:
        def run(conn: sqlite3.Connection) -> list[StreamEvent]:
            rows = conn.execute(
                "SELECT id, stream_id, play_id, event_type, payload, created_at"
                " FROM stream_events WHERE published_at IS NULL"
                " AND (:stream IS NULL OR stream_id = :stream) ORDER BY id",
                {"stream": stream_id},
            ).fetchall()
            return [
                StreamEvent(
                    id=r["id"],
                    stream_id=r["stream_id"],
                    play_id=r["play_id"],
                    event_type=r["event_type"],
                    payload_json=r["payload"],
                    created_at=datetime.fromisoformat(r["created_at"]),
                )
                for r in rows
            ]

        return await self._run(run)

    async def mark_stream_event_published(self, event_id: int) -> None:
        await self._run(
            lambda conn: conn.execute(
                f"UPDATE stream_events SET published_at = {NOW}"
                " WHERE id = ? AND published_at IS NULL",
                (event_id,),
            )
        )


def _play_values(play: Any) -> tuple[Any, ...]:
    return tuple(
        float(getattr(play, f))
        if f in _REALS
        else int(play.announced)
        if f == "announced"
        else getattr(play, f)
        for f in PLAY_FIELDS
    )


def _write_segment(conn: sqlite3.Connection, stream_id: int, segment: StreamSegment) -> None:
    """Store the segment (unless a rendition whose key sorts first is there) and move the
    stream's end, last sequence and key along with the latest segment end."""
    conn.execute(
        "INSERT INTO stream_segments (stream_id, sequence, key, start_s, duration_s,"
        " pts_s, n_frames, peaks, envelope_format, envelope_bands, envelope,"
        " sustained_peaks)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (stream_id, sequence) DO UPDATE SET key = excluded.key,"
        " start_s = excluded.start_s, duration_s = excluded.duration_s,"
        " pts_s = excluded.pts_s, n_frames = excluded.n_frames,"
        " peaks = excluded.peaks, envelope_format = excluded.envelope_format,"
        " envelope_bands = excluded.envelope_bands, envelope = excluded.envelope,"
        f" sustained_peaks = excluded.sustained_peaks, received_at = {NOW}"
        " WHERE excluded.key <= stream_segments.key",
        (
            stream_id,
            int(segment.sequence),
            segment.key,
            float(segment.start_s),
            float(segment.duration_s),
            None if segment.pts_s is None else float(segment.pts_s),
            int(segment.n_frames),
            segment.peaks,
            int(segment.envelope_format),
            int(segment.envelope_bands),
            segment.envelope,
            segment.sustained_peaks,
        ),
    )
    end = float(segment.end_s)
    conn.execute(
        f"UPDATE streams SET last_segment_at = {NOW},"
        " last_sequence = CASE WHEN :end > max_end_s THEN :seq ELSE last_sequence END,"
        " last_key = CASE WHEN :end > max_end_s THEN :key ELSE last_key END,"
        " max_end_s = max(max_end_s, :end) WHERE id = :id",
        {
            "end": end,
            "seq": segment.sequence,
            "key": segment.key,
            "id": stream_id,
        },
    )


def _write_plays(conn: sqlite3.Connection, update: StreamUpdate) -> list[int]:
    """Insert the new plays and rewrite the changed ones; the new plays' ids, in order."""
    new_ids: list[int] = []
    seen_at = None if update.seen_at is None else _iso(update.seen_at)
    for play in update.new_plays:
        cursor = conn.execute(
            f"INSERT INTO stream_plays (stream_id, {', '.join(PLAY_FIELDS)}, created_at)"
            f" VALUES (?, {', '.join('?' for _ in PLAY_FIELDS)}, coalesce(?, {NOW}))",
            (update.stream_id, *_play_values(play), seen_at),
        )
        new_ids.append(int(cursor.lastrowid or 0))
    for play_id, play in update.changed_plays.items():
        assignments = ", ".join(f"{f} = ?" for f in PLAY_FIELDS)
        conn.execute(
            f"UPDATE stream_plays SET {assignments}, updated_at = coalesce(?, {NOW})"
            " WHERE stream_id = ? AND id = ?",
            (*_play_values(play), seen_at, update.stream_id, play_id),
        )
    return new_ids


def _write_events(conn: sqlite3.Connection, update: StreamUpdate, new_ids: list[int]) -> None:
    """Add the outbox rows, each naming its play (a new play by the id it just got)."""
    for event in update.events:
        play_id = event.play_id if event.new_play is None else new_ids[event.new_play]
        payload = {**event.payload, "play": {**event.payload["play"], "id": play_id}}
        conn.execute(
            "INSERT INTO stream_events (stream_id, play_id, event_type, payload)"
            " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (update.stream_id, play_id, event.event_type, json.dumps(payload)),
        )

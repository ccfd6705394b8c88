"""The live-stream tables in PostgreSQL: segments, window matches, plays and their events.

A stream's log is recomputed under a session-level advisory lock keyed on the stream name,
taken with `pg_try_advisory_lock` on a pooled connection that is held only while the lock is:
workers waiting for a busy stream hold no connection, so they cannot starve the holder's own
queries. Each recomputation is then written in one transaction.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import asyncpg

from service.store.columns import PLAY_COLUMNS, SEGMENT_COLUMNS, STREAM_COLUMNS
from service.store.play_report import PlayReportQuery, PlayReportRow, report_row, report_sql
from service.store.postgres.connection import PostgresBase
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

#: First key of the two-int advisory lock form for streams ("strm"); the second is
#: hashtext(name). A hash collision only serialises two streams, it never mixes them.
STREAM_LOCK_CLASS = 0x7374726D
_LOCK_RETRY_S = 0.05


def _play(row: asyncpg.Record) -> Play:
    return Play(**dict(row))


def _event(row: asyncpg.Record) -> StreamEvent:
    values = dict(row)
    values["payload_json"] = values.pop("payload")
    return StreamEvent(**values)


class PostgresStreams(PostgresBase):
    """Streams, their segments, window matches, plays and outbox events."""

    def stream_lock(self, name: str) -> AbstractAsyncContextManager[None]:
        return self._stream_lock(name)

    @asynccontextmanager
    async def _stream_lock(self, name: str) -> AsyncIterator[None]:
        while True:
            async with self._connection() as conn:
                got = await conn.fetchval(
                    "SELECT pg_try_advisory_lock($1, hashtext($2))", STREAM_LOCK_CLASS, name
                )
                if got:
                    try:
                        yield
                    finally:
                        # A broken connection releases the lock with its session.
                        await conn.execute(
                            "SELECT pg_advisory_unlock($1, hashtext($2))", STREAM_LOCK_CLASS, name
                        )
                    return
            await asyncio.sleep(_LOCK_RETRY_S)

    async def get_stream(self, name: str) -> StreamState | None:
        reject_nul(name)
        async with self._connection() as conn:
            row = await conn.fetchrow(f"SELECT {STREAM_COLUMNS} FROM streams WHERE name = $1", name)
        return None if row is None else StreamState(**dict(row))

    async def ensure_stream(self, stream: NewStream) -> StreamState:
        reject_nul(stream.name)
        async with self._connection() as conn:
            await conn.execute(
                "INSERT INTO streams (name, pts_epoch_s, wall_origin, max_end_s, last_sequence,"
                " last_key) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING",
                stream.name,
                stream.pts_epoch_s,
                stream.wall_origin,
                stream.max_end_s,
                stream.last_sequence,
                stream.last_key,
            )
            row = await conn.fetchrow(
                f"SELECT {STREAM_COLUMNS} FROM streams WHERE name = $1", stream.name
            )
        return StreamState(**dict(row))

    async def list_streams(self) -> list[StreamState]:
        async with self._connection() as conn:
            rows = await conn.fetch(f"SELECT {STREAM_COLUMNS} FROM streams ORDER BY name")
        return [StreamState(**dict(r)) for r in rows]

    async def stream_segments(
        self, stream_id: int, start_from_s: float, start_to_s: float
    ) -> list[StreamSegment]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"SELECT {SEGMENT_COLUMNS} FROM stream_segments WHERE stream_id = $1"
                " AND start_s BETWEEN $2 AND $3 ORDER BY start_s, sequence",
                stream_id,
                start_from_s,
                start_to_s,
            )
        return [StreamSegment(**dict(r)) for r in rows]

    async def stream_windows(
        self, stream_id: int, first_index: int, last_index: int
    ) -> list[StreamWindow]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT window_index, matches FROM stream_windows WHERE stream_id = $1"
                " AND window_index BETWEEN $2 AND $3 ORDER BY window_index",
                stream_id,
                first_index,
                last_index,
            )
        return [StreamWindow(r["window_index"], r["matches"]) for r in rows]

    async def stream_plays(
        self, stream_id: int, from_s: float, to_s: float, *, playing_only: bool = False
    ) -> list[Play]:
        status = "status = 'playing'" if playing_only else "status <> 'retracted'"
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"SELECT {PLAY_COLUMNS} FROM stream_plays WHERE stream_id = $1"
                f" AND {status} AND end_s >= $2 AND start_s <= $3"
                " ORDER BY start_s, id",
                stream_id,
                from_s,
                to_s,
            )
        return [_play(r) for r in rows]

    async def unannounced_plays(self, stream_id: int) -> list[Play]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"SELECT {PLAY_COLUMNS} FROM stream_plays WHERE stream_id = $1"
                " AND NOT announced AND status <> 'retracted' ORDER BY start_s, id",
                stream_id,
            )
        return [_play(r) for r in rows]

    async def segment_spans(
        self, stream_id: int, from_s: float, to_s: float
    ) -> list[tuple[int, float, float]]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT sequence, start_s, start_s + duration_s AS end_s FROM stream_segments"
                " WHERE stream_id = $1 AND start_s + duration_s >= $2 AND start_s <= $3"
                " ORDER BY start_s, sequence",
                stream_id,
                from_s,
                to_s,
            )
        return [(int(r["sequence"]), float(r["start_s"]), float(r["end_s"])) for r in rows]

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
        where = ["stream_id = $1"]
        args: list[Any] = [stream_id]
        if from_s is not None:
            args.append(from_s)
            where.append(f"end_s > ${len(args)}")
        if to_s is not None:
            args.append(to_s)
            where.append(f"start_s < ${len(args)}")
        if not include_retracted:
            where.append("status <> 'retracted'")
        clause = " AND ".join(where)
        n = len(args)
        async with self._connection() as conn, conn.transaction(isolation="repeatable_read"):
            total = await conn.fetchval(f"SELECT count(*) FROM stream_plays WHERE {clause}", *args)
            rows = await conn.fetch(
                f"SELECT {PLAY_COLUMNS} FROM stream_plays WHERE {clause}"
                f" ORDER BY start_s, id LIMIT ${n + 1} OFFSET ${n + 2}",
                *args,
                limit,
                offset,
            )
        return PlayPage([_play(r) for r in rows], total, limit, offset)

    async def play_report(self, query: PlayReportQuery) -> AsyncIterator[PlayReportRow]:
        start, end = query.range_epoch_s()
        sql = report_sql(
            query.group_by,
            "extract(epoch FROM s.wall_origin)::float8",
            "to_char(to_timestamp({x}) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
            ["$1::float8", "$2::float8", "$3::text", "$3::text"],
        )
        async with self._connection() as conn, conn.transaction(isolation="repeatable_read"):
            # A server-side cursor: groups arrive a batch at a time, however many there are.
            cursor = conn.cursor(
                sql, start, end, query.stream, prefetch=500, timeout=self._command_timeout_s
            )
            async for row in cursor:
                yield report_row(dict(row), query.group_by)

    async def get_play(self, stream_id: int, play_id: int) -> Play | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(
                f"SELECT {PLAY_COLUMNS} FROM stream_plays WHERE stream_id = $1 AND id = $2",
                stream_id,
                play_id,
            )
        return None if row is None else _play(row)

    async def current_plays(self, stream_ids: list[int]) -> dict[int, Play]:
        if not stream_ids:
            return {}
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"SELECT DISTINCT ON (stream_id) {PLAY_COLUMNS} FROM stream_plays"
                " WHERE stream_id = ANY($1::int4[]) AND status = 'playing'"
                " ORDER BY stream_id, start_s DESC, id DESC",
                stream_ids,
            )
        return {r["stream_id"]: _play(r) for r in rows}

    async def apply_stream_update(self, update: StreamUpdate) -> list[int]:
        async with self._connection() as conn, conn.transaction():
            if update.segment is not None:
                await _write_segment(conn, update.stream_id, update.segment)
            if update.windows:
                await conn.executemany(
                    "INSERT INTO stream_windows (stream_id, window_index, matches)"
                    " VALUES ($1, $2, $3::json) ON CONFLICT (stream_id, window_index)"
                    " DO UPDATE SET matches = excluded.matches, updated_at = now()",
                    [(update.stream_id, w.index, w.matches_json) for w in update.windows],
                )
            new_ids = await _write_plays(conn, update)
            await _write_events(conn, update, new_ids)
        return new_ids

    async def idle_streams(self, timeout_s: float) -> list[StreamState]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"SELECT {STREAM_COLUMNS} FROM streams s"
                " WHERE last_segment_at < now() - make_interval(secs => $1)"
                " AND EXISTS (SELECT 1 FROM stream_plays p WHERE p.stream_id = s.id"
                " AND p.status = 'playing') ORDER BY name",
                float(timeout_s),
            )
        return [StreamState(**dict(r)) for r in rows]

    async def prune_stream(self, stream_id: int, before_s: float, below_window: int) -> int:
        async with self._connection() as conn, conn.transaction():
            dropped = await conn.fetchval(
                "WITH gone AS (DELETE FROM stream_segments WHERE stream_id = $1"
                " AND start_s + duration_s < $2 RETURNING 1) SELECT count(*) FROM gone",
                stream_id,
                before_s,
            )
            await conn.execute(
                "DELETE FROM stream_windows WHERE stream_id = $1 AND window_index < $2",
                stream_id,
                below_window,
            )
        return int(dropped)

    async def pending_stream_events(self, stream_id: int | None = None) -> list[StreamEvent]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT id, stream_id, play_id, event_type, payload, created_at"
                " FROM stream_events WHERE published_at IS NULL"
                " AND ($1::int4 IS NULL OR stream_id = $1) ORDER BY id",
                stream_id,
            )
        return [_event(r) for r in rows]

    async def mark_stream_event_published(self, event_id: int) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "UPDATE stream_events SET published_at = now()"
                " WHERE id = $1 AND published_at IS NULL",
                event_id,
            )


async def _write_segment(conn: asyncpg.Connection, stream_id: int, segment: StreamSegment) -> None:
    """Store the segment (unless a rendition whose key sorts first is there) and move the
    stream's end, last sequence and key along with the latest segment end."""
    await conn.execute(
        "INSERT INTO stream_segments (stream_id, sequence, key, start_s, duration_s,"
        " pts_s, n_frames, peaks, envelope_format, envelope_bands, envelope,"
        " sustained_peaks)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        " ON CONFLICT (stream_id, sequence) DO UPDATE SET key = excluded.key,"
        " start_s = excluded.start_s, duration_s = excluded.duration_s,"
        " pts_s = excluded.pts_s, n_frames = excluded.n_frames,"
        " peaks = excluded.peaks, envelope_format = excluded.envelope_format,"
        " envelope_bands = excluded.envelope_bands, envelope = excluded.envelope,"
        " sustained_peaks = excluded.sustained_peaks, received_at = now()"
        " WHERE excluded.key <= stream_segments.key",
        stream_id,
        segment.sequence,
        segment.key,
        segment.start_s,
        segment.duration_s,
        segment.pts_s,
        segment.n_frames,
        segment.peaks,
        segment.envelope_format,
        segment.envelope_bands,
        segment.envelope,
        segment.sustained_peaks,
    )
    await conn.execute(
        "UPDATE streams SET last_segment_at = now(),"
        " last_sequence = CASE WHEN $2 > max_end_s THEN $3 ELSE last_sequence END,"
        " last_key = CASE WHEN $2 > max_end_s THEN $4 ELSE last_key END,"
        " max_end_s = greatest(max_end_s, $2) WHERE id = $1",
        stream_id,
        segment.end_s,
        segment.sequence,
        segment.key,
    )


async def _write_plays(conn: asyncpg.Connection, update: StreamUpdate) -> list[int]:
    """Insert the new plays and rewrite the changed ones; the new plays' ids, in order."""
    new_ids: list[int] = []
    for play in update.new_plays:
        new_ids.append(
            await conn.fetchval(
                f"INSERT INTO stream_plays (stream_id, {', '.join(PLAY_FIELDS)}, created_at)"
                f" VALUES ($1, {', '.join(f'${i}' for i in range(2, len(PLAY_FIELDS) + 2))},"
                f" coalesce(${len(PLAY_FIELDS) + 2}::timestamptz, now())) RETURNING id",
                update.stream_id,
                *(getattr(play, f) for f in PLAY_FIELDS),
                update.seen_at,
            )
        )
    for play_id, play in update.changed_plays.items():
        assignments = ", ".join(f"{f} = ${i}" for i, f in enumerate(PLAY_FIELDS, 3))
        await conn.execute(
            f"UPDATE stream_plays SET {assignments},"
            f" updated_at = coalesce(${len(PLAY_FIELDS) + 3}::timestamptz, now())"
            " WHERE stream_id = $1 AND id = $2",
            update.stream_id,
            play_id,
            *(getattr(play, f) for f in PLAY_FIELDS),
            update.seen_at,
        )
    return new_ids


async def _write_events(conn: asyncpg.Connection, update: StreamUpdate, new_ids: list[int]) -> None:
    """Add the outbox rows, each naming its play (a new play by the id it just got)."""
    for event in update.events:
        play_id = event.play_id if event.new_play is None else new_ids[event.new_play]
        payload = {**event.payload, "play": {**event.payload["play"], "id": play_id}}
        await conn.execute(
            "INSERT INTO stream_events (stream_id, play_id, event_type, payload)"
            " VALUES ($1, $2, $3, $4::json) ON CONFLICT DO NOTHING",
            update.stream_id,
            play_id,
            event.event_type,
            json.dumps(payload, ensure_ascii=False),
        )

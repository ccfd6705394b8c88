"""Stream outages in PostgreSQL (table stream_gaps, migration 0008): one open gap per stream at
most (a partial unique index), so two workers noticing the same silence open it once."""

from __future__ import annotations

from typing import Literal

import asyncpg

from service.store.postgres.connection import PostgresBase
from service.store.records import StreamGap

_GAP_COLUMNS = (
    "id, stream_id, from_s, to_s, down_published_at IS NOT NULL AS down_published,"
    " up_published_at IS NOT NULL AS up_published"
)


def _gap(row: asyncpg.Record) -> StreamGap:
    return StreamGap(**dict(row))


class PostgresGaps(PostgresBase):
    async def segment_neighbours(
        self, stream_id: int, sequence: int, start_s: float
    ) -> tuple[float | None, float | None]:
        async with self._connection() as conn:
            row = await conn.fetchrow(
                "SELECT (SELECT max(start_s + duration_s) FROM stream_segments"
                "  WHERE stream_id = $1 AND start_s < $3 AND sequence <> $2) AS before_end_s,"
                " (SELECT min(start_s) FROM stream_segments"
                "  WHERE stream_id = $1 AND start_s > $3 AND sequence <> $2) AS after_start_s",
                stream_id,
                sequence,
                float(start_s),
            )
        return row["before_end_s"], row["after_start_s"]

    async def stream_gaps(self, stream_id: int | None = None) -> list[StreamGap]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"SELECT {_GAP_COLUMNS} FROM stream_gaps"
                " WHERE $1::integer IS NULL OR stream_id = $1 ORDER BY stream_id, from_s, id",
                stream_id,
            )
        return [_gap(r) for r in rows]

    async def open_stream_gap(self, stream_id: int, from_s: float) -> bool:
        async with self._connection() as conn:
            opened = await conn.fetchval(
                "INSERT INTO stream_gaps (stream_id, from_s) VALUES ($1, $2)"
                " ON CONFLICT (stream_id) WHERE to_s IS NULL DO NOTHING RETURNING id",
                stream_id,
                float(from_s),
            )
        return opened is not None

    async def save_stream_gap(
        self, stream_id: int, gap_id: int | None, from_s: float, to_s: float | None
    ) -> int:
        async with self._connection() as conn:
            if gap_id is None:
                return await conn.fetchval(
                    "INSERT INTO stream_gaps (stream_id, from_s, to_s) VALUES ($1, $2, $3)"
                    " RETURNING id",
                    stream_id,
                    float(from_s),
                    to_s,
                )
            await conn.execute(
                "UPDATE stream_gaps SET from_s = $3, to_s = $4 WHERE id = $2 AND stream_id = $1",
                stream_id,
                gap_id,
                float(from_s),
                to_s,
            )
            return gap_id

    async def delete_stream_gap(self, gap_id: int) -> None:
        async with self._connection() as conn:
            await conn.execute("DELETE FROM stream_gaps WHERE id = $1", gap_id)

    async def pending_gap_events(self) -> list[StreamGap]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"SELECT {_GAP_COLUMNS} FROM stream_gaps WHERE down_published_at IS NULL"
                " OR (to_s IS NOT NULL AND up_published_at IS NULL) ORDER BY id"
            )
        return [_gap(r) for r in rows]

    async def mark_gap_published(self, gap_id: int, event: Literal["down", "up"]) -> None:
        column = {"down": "down_published_at", "up": "up_published_at"}[event]
        async with self._connection() as conn:
            await conn.execute(
                f"UPDATE stream_gaps SET {column} = now() WHERE id = $1 AND {column} IS NULL",
                gap_id,
            )

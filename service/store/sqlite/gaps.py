"""Stream outages in SQLite (table stream_gaps, migration 0008); see postgres/gaps.py."""

from __future__ import annotations

import sqlite3
from typing import Literal

from service.store.records import StreamGap
from service.store.sqlite.connection import NOW, SqliteBase

_GAP_COLUMNS = (
    "id, stream_id, from_s, to_s, down_published_at IS NOT NULL AS down_published,"
    " up_published_at IS NOT NULL AS up_published"
)


def _gap(row: sqlite3.Row) -> StreamGap:
    return StreamGap(
        id=row["id"],
        stream_id=row["stream_id"],
        from_s=float(row["from_s"]),
        to_s=None if row["to_s"] is None else float(row["to_s"]),
        down_published=bool(row["down_published"]),
        up_published=bool(row["up_published"]),
    )


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)


class SqliteGaps(SqliteBase):
    async def segment_neighbours(
        self, stream_id: int, sequence: int, start_s: float
    ) -> tuple[float | None, float | None]:
        def run(conn: sqlite3.Connection) -> tuple[float | None, float | None]:
            before, after = conn.execute(
                "SELECT (SELECT max(start_s + duration_s) FROM stream_segments"
                "  WHERE stream_id = :s AND start_s < :at AND sequence <> :seq),"
                " (SELECT min(start_s) FROM stream_segments"
                "  WHERE stream_id = :s AND start_s > :at AND sequence <> :seq)",
                {"s": stream_id, "seq": sequence, "at": float(start_s)},
            ).fetchone()
            return _float(before), _float(after)

        return await self._run(run)

    async def stream_gaps(self, stream_id: int | None = None) -> list[StreamGap]:
        return await self._run(
            lambda conn: [
                _gap(r)
                for r in conn.execute(
                    f"SELECT {_GAP_COLUMNS} FROM stream_gaps"
                    " WHERE :s IS NULL OR stream_id = :s ORDER BY stream_id, from_s, id",
                    {"s": stream_id},
                )
            ]
        )

    async def open_stream_gap(self, stream_id: int, from_s: float) -> bool:
        return await self._run(
            lambda conn: (
                conn.execute(
                    "INSERT OR IGNORE INTO stream_gaps (stream_id, from_s) VALUES (?, ?)",
                    (stream_id, float(from_s)),
                ).rowcount
                == 1
            )
        )

    async def save_stream_gap(
        self, stream_id: int, gap_id: int | None, from_s: float, to_s: float | None
    ) -> int:
        def run(conn: sqlite3.Connection) -> int:
            if gap_id is None:
                cursor = conn.execute(
                    "INSERT INTO stream_gaps (stream_id, from_s, to_s) VALUES (?, ?, ?)",
                    (stream_id, float(from_s), _float(to_s)),
                )
                assert cursor.lastrowid is not None
                return cursor.lastrowid
            conn.execute(
                "UPDATE stream_gaps SET from_s = ?, to_s = ? WHERE id = ? AND stream_id = ?",
                (float(from_s), _float(to_s), gap_id, stream_id),
            )
            return gap_id

        return await self._run(run)

    async def delete_stream_gap(self, gap_id: int) -> None:
        await self._run(
            lambda conn: conn.execute("DELETE FROM stream_gaps WHERE id = ?", (gap_id,))
        )

    async def pending_gap_events(self) -> list[StreamGap]:
        return await self._run(
            lambda conn: [
                _gap(r)
                for r in conn.execute(
                    f"SELECT {_GAP_COLUMNS} FROM stream_gaps WHERE down_published_at IS NULL"
                    " OR (to_s IS NOT NULL AND up_published_at IS NULL) ORDER BY id"
                )
            ]
        )

    async def mark_gap_published(self, gap_id: int, event: Literal["down", "up"]) -> None:
        column = {"down": "down_published_at", "up": "up_published_at"}[event]
        await self._run(
            lambda conn: conn.execute(
                f"UPDATE stream_gaps SET {column} = {NOW} WHERE id = ? AND {column} IS NULL",
                (gap_id,),
            )
        )

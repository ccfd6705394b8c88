"""The airplay report in SQLite: aggregated once, read a page of groups at a time.

The report's statement (service/store/play_report.py) fills a temporary table of this
connection with one row per group, in the statement's order, as one statement (so one
snapshot of the plays). The groups are then read from it by rowid, a page per round trip on
the store's thread: no statement stays open between round trips (other work runs on the same
connection in between), the process holds one page at a time, and nothing is aggregated twice.
The table is dropped when the report ends, or with the connection.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator
from typing import Any

from service.store.play_report import PlayReportQuery, PlayReportRow, report_row, report_sql
from service.store.sqlite.connection import SqliteBase

#: Groups of the airplay report read per round trip.
REPORT_PAGE_GROUPS = 1000


class SqliteReports(SqliteBase):
    async def play_report(self, query: PlayReportQuery) -> AsyncIterator[PlayReportRow]:
        start, end = query.range_epoch_s()
        sql = report_sql(
            query.group_by,
            "((julianday(s.wall_origin) - 2440587.5) * 86400.0)",
            "strftime('%Y-%m-%d', {x}, 'unixepoch')",
            [":start", ":end", ":stream", ":stream"],
        )
        args = {"start": start, "end": end, "stream": query.stream}
        table = f"temp.play_report_{uuid.uuid4().hex}"
        await self._run(_aggregate, table, sql, args)
        try:
            after = 0
            while True:
                page = await self._run(_page, table, after)
                for values in page:
                    yield report_row(values, query.group_by)
                if len(page) < REPORT_PAGE_GROUPS:
                    return
                after = page[-1]["group_rowid"]
        finally:
            if self._executor is not None:  # a closed store took the table with it
                await self._run(_drop, table)


def _aggregate(conn: sqlite3.Connection, table: str, sql: str, args: dict[str, Any]) -> None:
    # Rows are inserted in the statement's order, so rowids follow it.
    conn.execute(f"CREATE TABLE {table} AS {sql}", args)


def _page(conn: sqlite3.Connection, table: str, after: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        f"SELECT rowid AS group_rowid, * FROM {table} WHERE rowid > ?"
        f" ORDER BY rowid LIMIT {REPORT_PAGE_GROUPS}",
        (after,),
    ).fetchall()
    return [dict(zip(row.keys(), row, strict=True)) for row in rows]


def _drop(conn: sqlite3.Connection, table: str) -> None:
    conn.execute(f"DROP TABLE IF EXISTS {table}")

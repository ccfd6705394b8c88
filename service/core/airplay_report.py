"""The airplay report as readers get it: rows of service/store/play_report.py as JSON objects
or CSV lines, produced one group at a time so that a year of fifty streams streams out without
ever being held whole."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from typing import Any

from service.store import PlayReportQuery, PlayReportRow, Store

#: The report's columns (CSV header, JSON keys), in order.
REPORT_COLUMNS = (
    "key",
    "song_id",
    "title",
    "artist",
    "isrc",
    "plays",
    "airtime_s",
    "first_aired",
    "last_aired",
    "songs",
    "streams",
)


def row_document(row: PlayReportRow) -> dict[str, Any]:
    return {
        "key": row.key,
        "song_id": row.song_id,
        "title": row.title,
        "artist": row.artist,
        "isrc": row.isrc,
        "plays": row.plays,
        "airtime_s": row.airtime_s,
        "first_aired": row.first_aired.isoformat().replace("+00:00", "Z"),
        "last_aired": row.last_aired.isoformat().replace("+00:00", "Z"),
        "songs": row.songs,
        "streams": row.streams,
    }


async def report_csv(store: Store, query: PlayReportQuery) -> AsyncIterator[str]:
    """The header, then one CSV line per group."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(REPORT_COLUMNS)
    yield buffer.getvalue()
    async for row in store.play_report(query):
        buffer.seek(0)
        buffer.truncate()
        document = row_document(row)
        writer.writerow(["" if document[c] is None else document[c] for c in REPORT_COLUMNS])
        yield buffer.getvalue()


async def report_json(store: Store, query: PlayReportQuery) -> AsyncIterator[str]:
    """One JSON document, `{"group_by", "from", "to", "stream", "items": [...]}`, in pieces."""
    head = {
        "group_by": query.group_by,
        "from": None if query.since is None else query.since.isoformat(),
        "to": None if query.until is None else query.until.isoformat(),
        "stream": query.stream,
    }
    yield json.dumps(head)[:-1] + ', "items": ['
    first = True
    async for row in store.play_report(query):
        yield ("" if first else ", ") + json.dumps(row_document(row))
        first = False
    yield "]}\n"

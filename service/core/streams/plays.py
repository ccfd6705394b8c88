"""The airplay logs as the outside reads them: streams, pages of plays, one play, CSV.

Plays are kept on the stream clock (seconds from the stream's origin); readers ask in wall
time and read wall times back (log.play_document), which this module converts both ways.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from service.core.streams.log import play_document
from service.errors import NotFound
from service.store import Play, Store, StreamState

#: The columns of an airplay log's CSV, in order.
CSV_COLUMNS = (
    "id",
    "stream",
    "status",
    "song_id",
    "title",
    "artist",
    "isrc",
    "external_id",
    "start_at",
    "end_at",
    "stream_start_s",
    "stream_end_s",
    "song_start_s",
    "song_end_s",
    "duration_s",
    "confidence",
    "score",
    "speed",
    "announced",
    "overlap_in_s",
    "overlap_out_s",
)


@dataclass(frozen=True)
class PlayQuery:
    """Which page of a stream's log to read."""

    #: Plays still on air after this time (UTC when naive); None: from the start.
    since: datetime | None = None
    #: Plays starting before this time; None: to the end.
    until: datetime | None = None
    limit: int = 100
    offset: int = 0
    include_retracted: bool = False


@dataclass(frozen=True)
class PlayListing:
    """A page of a stream's log, each play as log.play_document shows it."""

    stream: StreamState
    items: list[dict[str, Any]]
    total: int
    limit: int
    offset: int


async def stream_named(store: Store, name: str) -> StreamState:
    """The stream called `name`; NotFound (404) when there is none."""
    stream = await store.get_stream(name)
    if stream is None:
        raise NotFound(f"no stream named {name!r}")
    return stream


async def play_documents(
    store: Store, stream: StreamState, plays: list[Play]
) -> list[dict[str, Any]]:
    """`stream`'s `plays` as the API shows them, their songs read at once."""
    songs = await store.get_songs(sorted({p.song_id for p in plays}))
    return [
        play_document(p, p.id, stream.name, stream.wall_origin, songs.get(p.song_id)) for p in plays
    ]


async def current_plays(store: Store, streams: list[StreamState]) -> dict[int, dict[str, Any]]:
    """The play on air now on each of `streams` that has one, by stream id; the songs of all
    of them read at once."""
    current = await store.current_plays([s.id for s in streams])
    if not current:
        return {}
    songs = await store.get_songs(sorted({p.song_id for p in current.values()}))
    return {
        s.id: play_document(
            current[s.id], current[s.id].id, s.name, s.wall_origin, songs.get(current[s.id].song_id)
        )
        for s in streams
        if s.id in current
    }


def stream_seconds(stream: StreamState, moment: datetime | None) -> float | None:
    """A wall time on `stream`'s clock (a naive time is taken as UTC)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - stream.wall_origin).total_seconds()


async def list_plays(store: Store, name: str, query: PlayQuery) -> PlayListing:
    """A page of the log of the stream called `name`, in stream order."""
    stream = await stream_named(store, name)
    page = await store.list_plays(
        stream.id,
        from_s=stream_seconds(stream, query.since),
        to_s=stream_seconds(stream, query.until),
        limit=query.limit,
        offset=query.offset,
        include_retracted=query.include_retracted,
    )
    items = await play_documents(store, stream, page.items)
    return PlayListing(stream, items, page.total, page.limit, page.offset)


async def get_play(store: Store, name: str, play_id: int) -> dict[str, Any]:
    """One play of the stream called `name`; NotFound when either is missing."""
    stream = await stream_named(store, name)
    play = await store.get_play(stream.id, play_id)
    if play is None:
        raise NotFound(f"no play {play_id} in stream {name!r}")
    return (await play_documents(store, stream, [play]))[0]


def plays_csv(plays: list[dict[str, Any]]) -> str:
    """Plays (as play_documents gives them) as CSV with a header row (CSV_COLUMNS)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for p in plays:
        song = p["song"]
        writer.writerow(
            [
                p["id"],
                p["stream"],
                p["status"],
                song["id"],
                song["title"] or "",
                song["artist"] or "",
                song["isrc"] or "",
                song["external_id"] or "",
                p["start_at"],
                p["end_at"],
                p["stream_start_s"],
                p["stream_end_s"],
                p["song_start_s"],
                p["song_end_s"],
                p["duration_s"],
                p["confidence"],
                p["score"],
                p["speed"],
                "true" if p["announced"] else "false",
                p["overlap_in_s"],
                p["overlap_out_s"],
            ]
        )
    return buffer.getvalue()

"""Live streams: the streams seen, their airplay logs (JSON or CSV), one play."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Response

from service.api.deps import StoreDep
from service.api.params import Offset, PlayId, WholeNumber
from service.core.streams.log import play_document, wall_clock
from service.errors import BadRequest, NotFound
from service.schemas import LastSegmentOut, PlayOut, PlayPageOut, StreamOut
from service.store import Play, Store, StreamState

router = APIRouter(prefix="/streams", tags=["streams"])

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
)


async def _stream(store: Store, name: str) -> StreamState:
    stream = await store.get_stream(name)
    if stream is None:
        raise NotFound(f"no stream named {name!r}")
    return stream


async def _plays_out(store: Store, stream: StreamState, plays: list[Play]) -> list[PlayOut]:
    songs = await store.get_songs(sorted({p.song_id for p in plays}))
    return [
        PlayOut.model_validate(
            play_document(p, p.id, stream.name, stream.wall_origin, songs.get(p.song_id))
        )
        for p in plays
    ]


@router.get("", response_model=list[StreamOut])
async def list_streams(store: StoreDep) -> list[StreamOut]:
    """Every stream with its latest segment and the play on air now (if any)."""
    streams = await store.list_streams()
    current = await store.current_plays([s.id for s in streams])
    out = []
    for s in streams:
        play = current.get(s.id)
        out.append(
            StreamOut(
                name=s.name,
                created_at=s.created_at,
                last_segment=LastSegmentOut(
                    sequence=s.last_sequence,
                    key=s.last_key,
                    stream_end_s=round(s.max_end_s, 3),
                    end_at=wall_clock(s.wall_origin, s.max_end_s),
                    processed_at=s.last_segment_at,
                ),
                current_play=(await _plays_out(store, s, [play]))[0] if play else None,
            )
        )
    return out


def _stream_seconds(stream: StreamState, moment: datetime | None) -> float | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - stream.wall_origin).total_seconds()


@router.get(
    "/{name}/plays",
    response_model=PlayPageOut,
    responses={200: {"content": {"text/csv": {}}, "description": "JSON, or CSV when asked."}},
)
async def list_plays(
    name: str,
    store: StoreDep,
    since: Annotated[
        datetime | None,
        Query(alias="from", description="Plays still on air after this UTC time (ISO 8601)."),
    ] = None,
    until: Annotated[
        datetime | None,
        Query(alias="to", description="Plays starting before this UTC time (ISO 8601)."),
    ] = None,
    limit: Annotated[int, WholeNumber, Query(ge=1, le=10000)] = 100,
    offset: Offset = 0,
    include_retracted: bool = False,
    format: Annotated[Literal["json", "csv"] | None, Query()] = None,
    accept: Annotated[str | None, Header()] = None,
) -> PlayPageOut | Response:
    """The stream's airplay log in stream order: JSON, or CSV with `?format=csv` or
    `Accept: text/csv`. The CSV carries the page's rows; `X-Total-Count` says how many match."""
    if since is not None and until is not None and until <= since:
        raise BadRequest("`to` must be later than `from`")
    stream = await _stream(store, name)
    page = await store.list_plays(
        stream.id,
        from_s=_stream_seconds(stream, since),
        to_s=_stream_seconds(stream, until),
        limit=limit,
        offset=offset,
        include_retracted=include_retracted,
    )
    out = PlayPageOut(
        items=await _plays_out(store, stream, page.items),
        total=page.total,
        limit=page.limit,
        offset=page.offset,
    )
    wants_csv = format == "csv" or (
        format is None and accept is not None and "text/csv" in accept.lower()
    )
    if not wants_csv:
        return out
    return Response(
        content=_csv(out.items),
        media_type="text/csv; charset=utf-8",
        headers={
            "X-Total-Count": str(out.total),
            "Content-Disposition": f'attachment; filename="{stream.name}-plays.csv"',
        },
    )


def _csv(plays: list[PlayOut]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for p in plays:
        writer.writerow(
            [
                p.id,
                p.stream,
                p.status,
                p.song.id,
                p.song.title or "",
                p.song.artist or "",
                p.song.isrc or "",
                p.song.external_id or "",
                p.start_at.isoformat().replace("+00:00", "Z"),
                p.end_at.isoformat().replace("+00:00", "Z"),
                p.stream_start_s,
                p.stream_end_s,
                p.song_start_s,
                p.song_end_s,
                p.duration_s,
                p.confidence,
                p.score,
                p.speed,
            ]
        )
    return buffer.getvalue()


@router.get("/{name}/plays/{play_id}", response_model=PlayOut)
async def get_play(name: str, play_id: PlayId, store: StoreDep) -> PlayOut:
    stream = await _stream(store, name)
    play = await store.get_play(stream.id, play_id)
    if play is None:
        raise NotFound(f"no play {play_id} in stream {name!r}")
    return (await _plays_out(store, stream, [play]))[0]

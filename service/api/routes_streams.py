"""Live streams: the streams seen, their airplay logs (JSON or CSV), one play."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Response

from service.api.deps import StoreDep
from service.api.openapi import GUARDED, error_responses
from service.api.params import Offset, PlayId, WholeNumber
from service.core.streams import plays
from service.core.streams.health import gap_document
from service.core.streams.log import wall_clock
from service.errors import BadRequest, NotFound
from service.schemas import GapOut, LastSegmentOut, PlayOut, PlayPageOut, StreamOut
from service.store import Store, StreamGap, StreamState

router = APIRouter(prefix="/streams", tags=["streams"])


@router.get("", response_model=list[StreamOut], responses=error_responses(*GUARDED))
async def list_streams(store: StoreDep) -> list[StreamOut]:
    """Every stream with its health (up or down, its outages), its latest segment and the
    play on air now (if any)."""
    return await _streams_out(store, await store.list_streams(), await store.stream_gaps())


@router.get(
    "/{name}",
    response_model=StreamOut,
    responses=error_responses("not_found", "validation_error", *GUARDED),
)
async def get_stream(name: str, store: StoreDep) -> StreamOut:
    """One stream: its health (up or down, its outages), latest segment and current play."""
    state = await store.get_stream(name)
    if state is None:
        raise NotFound(f"no stream named {name!r}")
    (out,) = await _streams_out(store, [state], await store.stream_gaps(state.id))
    return out


async def _streams_out(
    store: Store, streams: list[StreamState], gaps: list[StreamGap]
) -> list[StreamOut]:
    current = await plays.current_plays(store, streams)
    now = datetime.now(UTC)
    by_stream: dict[int, list[StreamGap]] = {}
    for gap in gaps:
        by_stream.setdefault(gap.stream_id, []).append(gap)
    return [
        StreamOut(
            name=s.name,
            created_at=s.created_at,
            status="down" if any(g.to_s is None for g in by_stream.get(s.id, [])) else "up",
            last_segment_at=s.last_segment_at,
            last_segment=LastSegmentOut(
                sequence=s.last_sequence,
                key=s.last_key,
                stream_end_s=round(s.max_end_s, 3),
                end_at=wall_clock(s.wall_origin, s.max_end_s),
                processed_at=s.last_segment_at,
            ),
            current_play=PlayOut.model_validate(current[s.id]) if s.id in current else None,
            gaps=[
                GapOut.model_validate(gap_document(g, s, now))
                for g in sorted(by_stream.get(s.id, []), key=lambda g: g.from_s)
            ],
        )
        for s in streams
    ]


@router.get(
    "/{name}/plays",
    response_model=PlayPageOut,
    responses={
        200: {"content": {"text/csv": {}}, "description": "JSON, or CSV when asked."},
        **error_responses("bad_request", "not_found", "validation_error", *GUARDED),
    },
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
    query = plays.PlayQuery(since, until, limit, offset, include_retracted)
    listing = await plays.list_plays(store, name, query)
    wants_csv = format == "csv" or (
        format is None and accept is not None and "text/csv" in accept.lower()
    )
    if not wants_csv:
        return PlayPageOut(
            items=[PlayOut.model_validate(p) for p in listing.items],
            total=listing.total,
            limit=listing.limit,
            offset=listing.offset,
        )
    return Response(
        content=plays.plays_csv(listing.items),
        media_type="text/csv; charset=utf-8",
        headers={
            "X-Total-Count": str(listing.total),
            "Content-Disposition": f'attachment; filename="{listing.stream.name}-plays.csv"',
        },
    )


@router.get(
    "/{name}/plays/{play_id}",
    response_model=PlayOut,
    responses=error_responses("not_found", "validation_error", *GUARDED),
)
async def get_play(name: str, play_id: PlayId, store: StoreDep) -> PlayOut:
    """One play of a stream's airplay log."""
    return PlayOut.model_validate(await plays.get_play(store, name, play_id))

"""Reports across the airplay logs: plays by song, ISRC, stream or day, as JSON or CSV."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from service.api.deps import StoreDep
from service.core.airplay_report import report_csv, report_json
from service.errors import BadRequest
from service.schemas import ErrorOut, PlayReportOut
from service.store import PlayReportQuery

router = APIRouter(prefix="/reports", tags=["reports"])


@router.get(
    "/plays",
    response_model=PlayReportOut,
    responses={
        200: {"content": {"text/csv": {}}, "description": "JSON, or CSV when asked."},
        400: {"model": ErrorOut, "description": "`bad_request`: `to` is not after `from`."},
        422: {"model": ErrorOut, "description": "`validation_error`: a malformed parameter."},
    },
)
async def plays_report(
    store: StoreDep,
    since: Annotated[
        datetime | None,
        Query(alias="from", description="Plays on air after this UTC time (ISO 8601)."),
    ] = None,
    until: Annotated[
        datetime | None,
        Query(alias="to", description="Plays starting before this UTC time (ISO 8601)."),
    ] = None,
    stream: Annotated[
        str | None, Query(max_length=200, description="Only this stream's plays.")
    ] = None,
    group_by: Annotated[
        Literal["song", "isrc", "stream", "day"],
        Query(description="One row per song, ISRC, stream or UTC day (a play's start)."),
    ] = "song",
    format: Annotated[Literal["json", "csv"] | None, Query()] = None,
    accept: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Plays across every stream (or one) in a time range, aggregated: how many plays, the
    airtime inside the range, when the first started and the last ended. Streamed as the
    database aggregates, so a year of many streams costs no memory here. JSON, or CSV with
    `?format=csv` or `Accept: text/csv`."""
    if since is not None and until is not None and until <= since:
        raise BadRequest("`to` must be later than `from`")
    if stream is not None and "\x00" in stream:
        raise BadRequest("`stream` must not contain NUL characters")
    query = PlayReportQuery(group_by, since, until, stream)
    wants_csv = format == "csv" or (
        format is None and accept is not None and "text/csv" in accept.lower()
    )
    if wants_csv:
        return StreamingResponse(
            report_csv(store, query),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="plays-by-{group_by}.csv"'},
        )
    return StreamingResponse(report_json(store, query), media_type="application/json")

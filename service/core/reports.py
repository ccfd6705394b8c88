"""The reports of the worker's use cases: a result -> the document written to S3 and the ledger.

The documents are the public JSON of `schemas.py`; this builds them from what a use case
returned. `report_key` is where the product puts a report (next to its file), decided here
rather than on the AWS side, which only writes what it is given.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Literal

from service.core.identify.identify import IdentifyResult
from service.core.index import Indexed
from service.core.streams.segment import SegmentResult
from service.core.streams.windows import window_start_s
from service.errors import ServiceError
from service.schemas import (
    DamagedSpanOut,
    ErrorBody,
    ErrorReport,
    IdentifyOut,
    IdentifyReport,
    IndexReport,
    SongIndexedOut,
    SongOut,
    SourceObject,
    StreamSegmentReport,
    StreamWindowOut,
    WindowHitOut,
)

#: Any report the worker writes.
Report = IdentifyReport | IndexReport | StreamSegmentReport | ErrorReport


def _now() -> datetime:
    return datetime.now(UTC)


def identify_report(
    result: IdentifyResult, source: SourceObject, processing_ms: float
) -> IdentifyReport:
    body = IdentifyOut.of(result)
    return IdentifyReport(
        **body.model_dump(),
        source=source,
        match=bool(body.matches),
        processing_ms=round(processing_ms, 1),
        processed_at=_now(),
    )


def stream_segment_report(
    result: SegmentResult, source: SourceObject, processing_ms: float
) -> StreamSegmentReport:
    return StreamSegmentReport(
        source=source,
        stream=result.stream,
        sequence=result.sequence,
        outcome=result.outcome,
        stream_start_s=result.start_s,
        duration_s=result.duration_s,
        pts_s=result.pts_s,
        placed_by=result.placed_by,
        windows=[
            StreamWindowOut(
                index=k,
                start_s=window_start_s(k),
                hits=[
                    WindowHitOut(
                        song_id=h.song_id,
                        confidence=h.confidence,
                        start_s=h.start_s,
                        end_s=h.end_s,
                        song_pos_s=h.song_pos_s,
                    )
                    for h in hits
                ],
            )
            for k, hits in result.windows
        ],
        play_ids=result.play_ids,
        damaged_spans=DamagedSpanOut.all_of(result.damaged_spans, result.start_s),
        processing_ms=round(processing_ms, 1),
        processed_at=_now(),
    )


def index_report(indexed: Indexed, source: SourceObject, processing_ms: float) -> IndexReport:
    overlap = indexed.duplicate
    return IndexReport(
        source=source,
        song=SongIndexedOut(
            **SongOut.of(indexed.song).model_dump(),
            created=indexed.created,
            duplicate_of=None if overlap is None else overlap.song_id,
            duplicate_coverage=None
            if overlap is None
            else round(min(overlap.new_coverage, overlap.stored_coverage), 3),
        ),
        processing_ms=round(processing_ms, 1),
        processed_at=_now(),
    )


def error_report(
    event_type: Literal["identify.error", "index.error", "stream.error"],
    error: ServiceError,
    source: SourceObject,
    processing_ms: float,
) -> ErrorReport:
    return ErrorReport(
        event_type=event_type,
        source=source,
        error=ErrorBody(code=error.code, message=error.message),
        processing_ms=round(processing_ms, 1),
        processed_at=_now(),
    )


def report_key(key: str) -> str:
    """Where the report of `key` goes: the same folder and stem, `.json`
    (`songs_to_check/a/b/clip.mp3` -> `songs_to_check/a/b/clip.json`)."""
    return str(PurePosixPath(key).with_suffix(".json"))

"""What the worker tells the world: report JSON next to the file in S3, a message on SNS.

A report is the processing result of one object; the ledger (`processed_objects.result_json`)
keeps it verbatim, so a report published again after a crash is the same document. Its match
fields are those of `POST /identify` (the report extends `IdentifyOut`), and the SNS message
is derived from the report alone: a compact summary with two message attributes subscribers
can filter on, `event_type` and `match`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, Field

from service.aws.events import ObjectCreated
from service.core.identify.identify import IdentifyResult
from service.core.streams.segment import SegmentResult
from service.core.streams.windows import window_start_s
from service.errors import ServiceError
from service.schemas import ErrorBody, IdentifyOut, SongIndexedOut, SongOut
from service.store import Song

EventType = Literal[
    "identify.result",
    "identify.error",
    "index.result",
    "index.error",
    "stream.segment",
    "stream.error",
]


class SourceObject(BaseModel):
    """The uploaded object a report is about."""

    bucket: str
    key: str
    etag: str | None = None
    version_id: str | None = None
    size_bytes: int | None = None

    @classmethod
    def of(cls, obj: ObjectCreated, etag: str | None, version_id: str | None) -> SourceObject:
        return cls(
            bucket=obj.bucket,
            key=obj.key,
            etag=etag or obj.etag,
            version_id=version_id or obj.version_id,
            size_bytes=obj.size_bytes,
        )


class _ReportBase(BaseModel):
    event_type: EventType
    source: SourceObject
    processing_ms: float = Field(description="Download, decoding, fingerprinting and matching.")
    processed_at: datetime


class IdentifyReport(IdentifyOut, _ReportBase):
    """`POST /identify`'s body (duration_s, elapsed_ms, matches) plus where it came from.
    Each song found appears once, its span in the file in query_start_s/query_end_s."""

    event_type: Literal["identify.result"] = "identify.result"
    match: bool


class WindowHitOut(BaseModel):
    song_id: int
    confidence: float
    start_s: float = Field(description="Stream time of the first aligned hash in the window.")
    end_s: float
    song_pos_s: float = Field(description="Position in the song at start_s.")


class StreamWindowOut(BaseModel):
    index: int
    start_s: float = Field(description="Window start on the stream clock.")
    hits: list[WindowHitOut]


class StreamSegmentReport(_ReportBase):
    """What a live-stream segment did to its stream (kept in the worker's ledger only; the
    log and its SNS events are the stream's output)."""

    event_type: Literal["stream.segment"] = "stream.segment"
    stream: str
    sequence: int
    outcome: Literal["stored", "superseded", "too_late"]
    stream_start_s: float
    duration_s: float
    pts_s: float | None
    placed_by: Literal["pts", "sequence"]
    windows: list[StreamWindowOut]
    play_ids: list[int] = Field(description="Plays created or changed by this segment.")


class IndexReport(_ReportBase):
    event_type: Literal["index.result"] = "index.result"
    song: SongIndexedOut


class ErrorReport(_ReportBase):
    event_type: Literal["identify.error", "index.error", "stream.error"]
    error: ErrorBody


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
        processing_ms=round(processing_ms, 1),
        processed_at=_now(),
    )


def index_report(
    song: Song, created: bool, source: SourceObject, processing_ms: float
) -> IndexReport:
    return IndexReport(
        source=source,
        song=SongIndexedOut(**SongOut.of(song).model_dump(), created=created),
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


def sns_message(report: dict[str, Any], report_location: str | None) -> dict[str, Any]:
    """The compact SNS message of a report (a dict as stored in the ledger)."""
    source = report["source"]
    message: dict[str, Any] = {
        "event_type": report["event_type"],
        "bucket": source["bucket"],
        "key": source["key"],
        "etag": source.get("etag"),
        "version_id": source.get("version_id"),
        "report_key": report_location,
    }
    if "matches" in report:
        message["match"] = report["match"]
        message["duration_s"] = report["duration_s"]
        message["matches"] = [
            {
                "song_id": m["song"]["id"],
                "title": m["song"]["title"],
                "artist": m["song"]["artist"],
                "confidence": m["confidence"],
                "song_offset_s": m["song_offset_s"],
                "query_start_s": m["query_start_s"],
                "query_end_s": m["query_end_s"],
            }
            for m in report["matches"]
        ]
    if "song" in report:
        song = report["song"]
        message["song"] = {
            "id": song["id"],
            "title": song["title"],
            "artist": song["artist"],
            "created": song["created"],
        }
    if "error" in report:
        message["error"] = report["error"]
    return message


def sns_attributes(report: dict[str, Any]) -> dict[str, dict[str, str]]:
    """`event_type` and `match` ("true" only for a report that found at least one song)."""
    return {
        "event_type": {"DataType": "String", "StringValue": report["event_type"]},
        "match": {"DataType": "String", "StringValue": "true" if report.get("match") else "false"},
    }


async def write_report(s3: Any, bucket: str, key: str, report_json: str) -> None:
    await s3.put_object(
        Bucket=bucket,
        Key=key,
        Body=report_json.encode("utf-8"),
        ContentType="application/json",
    )


async def publish(
    sns: Any, topic_arn: str, report: dict[str, Any], report_location: str | None
) -> None:
    await sns.publish(
        TopicArn=topic_arn,
        Message=json.dumps(sns_message(report, report_location), ensure_ascii=False),
        MessageAttributes=sns_attributes(report),
    )

"""What the worker tells the world, on AWS: report JSON in S3, a message on SNS.

`S3ReportSink` and `SnsPublisher` are what the worker's `ReportSink` and `EventPublisher`
(service/worker/ports.py) ask for; service/resources.py hands them over. The SNS message is
derived from the report alone (a dict as the ledger stores it): a compact summary with two
message attributes subscribers can filter on, `event_type` and `match`.
"""

from __future__ import annotations

import json
from typing import Any

from service.aws.stream_events import publish_stream_events
from service.core.streams.health import publish_gap_events
from service.store import Store
from service.telemetry import metrics


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
        if song.get("duplicate_of") is not None:
            message["song"]["duplicate_of"] = song["duplicate_of"]
    if "error" in report:
        message["error"] = report["error"]
    return message


def sns_attributes(report: dict[str, Any]) -> dict[str, dict[str, str]]:
    """`event_type` and `match` ("true" only for a report that found at least one song)."""
    return {
        "event_type": {"DataType": "String", "StringValue": report["event_type"]},
        "match": {"DataType": "String", "StringValue": "true" if report.get("match") else "false"},
    }


class S3ReportSink:
    """Report documents written to S3 as JSON."""

    def __init__(self, s3: Any) -> None:
        self._s3 = s3

    async def write_report(self, bucket: str, key: str, report_json: str) -> None:
        await self._s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=report_json.encode("utf-8"),
            ContentType="application/json",
        )


class SnsPublisher:
    """Reports and the play-event outbox, published on one SNS topic."""

    def __init__(self, sns: Any, topic_arn: str, stream_down_after_s: float = 120.0) -> None:
        self._sns = sns
        self._topic_arn = topic_arn
        self._down_after_s = stream_down_after_s

    async def publish_report(self, report: dict[str, Any], report_location: str | None) -> None:
        with metrics.counting_failures(metrics.SNS_PUBLISH_FAILURES.labels("report")):
            await self._sns.publish(
                TopicArn=self._topic_arn,
                Message=json.dumps(sns_message(report, report_location), ensure_ascii=False),
                MessageAttributes=sns_attributes(report),
            )

    async def publish_stream_events(self, store: Store) -> int:
        sent = await publish_stream_events(store, self._sns, self._topic_arn)
        return sent + await publish_gap_events(store, self._publish_health, self._down_after_s)

    async def _publish_health(self, payload: dict[str, Any]) -> None:
        """A stream.down / stream.up event (core/streams/health.py event_payload)."""
        with metrics.counting_failures(metrics.SNS_PUBLISH_FAILURES.labels("stream_event")):
            await self._sns.publish(
                TopicArn=self._topic_arn,
                Message=json.dumps(payload, ensure_ascii=False),
                MessageAttributes={
                    "event_type": {"DataType": "String", "StringValue": payload["event_type"]},
                    "stream": {"DataType": "String", "StringValue": payload["stream"]},
                },
            )

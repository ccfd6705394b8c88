"""SQS message bodies -> the S3 objects they announce.

Two shapes reach the queue, each either raw or wrapped in an SNS envelope (`Type:
Notification`, the event as a JSON string in `Message`):

- S3's own event notification: `{"Records": [{"eventName": "ObjectCreated:Put", "s3":
  {"bucket": {"name"}, "object": {"key", "size", "eTag", "versionId", "sequencer"}}}]}`, plus
  the `{"Event": "s3:TestEvent"}` S3 sends once when the notification is configured;
- EventBridge's "Object Created": `{"source": "aws.s3", "detail-type": "Object Created",
  "detail": {"bucket": {"name"}, "object": {"key", "size", "etag", "version-id", "sequencer"}}}`.

Both URL-encode the key the way HTML forms do (`+` for a space, `%C3%A7` for `ç`), so keys go
through `unquote_plus` exactly once; a literal `+` arrives as `%2B` and survives.

Pure functions, no I/O, producing the types of `service/objects.py`: anything that is not one
of these shapes raises `PoisonMessage`, which the worker leaves on the queue for its redrive
policy to move to the dead-letter queue.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_plus

from service.objects import ObjectCreated, ParsedMessage, PoisonMessage

__all__ = ["parse_message"]


def parse_message(body: str) -> ParsedMessage:
    """Every object-created event in an SQS message body; raises PoisonMessage otherwise."""
    try:
        document = json.loads(body)
    except (json.JSONDecodeError, TypeError) as exc:
        raise PoisonMessage(f"body is not JSON: {exc}") from exc
    return _parse_document(document, depth=0)


def _parse_document(document: Any, depth: int) -> ParsedMessage:
    if not isinstance(document, dict):
        raise PoisonMessage(f"body is a JSON {type(document).__name__}, not an object")
    if document.get("Type") == "Notification" and "Message" in document:
        if depth > 0:
            raise PoisonMessage("an SNS envelope inside an SNS envelope")
        inner = document["Message"]
        if not isinstance(inner, str):
            raise PoisonMessage("SNS envelope whose Message is not a string")
        try:
            return _parse_document(json.loads(inner), depth + 1)
        except json.JSONDecodeError as exc:
            raise PoisonMessage(f"SNS Message is not JSON: {exc}") from exc
    if document.get("Event") == "s3:TestEvent":
        return ParsedMessage(ignored=[f"s3:TestEvent for bucket {document.get('Bucket')}"])
    if "Records" in document:
        return _parse_s3_records(document["Records"])
    if document.get("source") == "aws.s3" and "detail-type" in document:
        return _parse_eventbridge(document)
    raise PoisonMessage(f"unknown message shape (keys: {', '.join(sorted(document)[:8])})")


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _size(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _bucket_name(section: dict[str, Any]) -> str | None:
    bucket = section.get("bucket")
    return _text(bucket.get("name")) if isinstance(bucket, dict) else None


def _object(bucket: Any, obj: Any, what: str) -> ObjectCreated:
    if not isinstance(obj, dict) or not _text(bucket) or not _text(obj.get("key")):
        raise PoisonMessage(f"{what} without a bucket name and object key")
    return ObjectCreated(
        bucket=bucket,
        key=unquote_plus(obj["key"]),
        # S3 notifications spell it eTag, EventBridge etag; neither quotes it.
        etag=_text(obj.get("eTag")) or _text(obj.get("etag")),
        version_id=_text(obj.get("versionId")) or _text(obj.get("version-id")),
        sequencer=_text(obj.get("sequencer")),
        size_bytes=_size(obj.get("size")),
    )


def _parse_s3_records(records: Any) -> ParsedMessage:
    if not isinstance(records, list):
        raise PoisonMessage("Records is not a list")
    parsed = ParsedMessage()
    for record in records:
        if not isinstance(record, dict) or not isinstance(record.get("s3"), dict):
            raise PoisonMessage("a record without an s3 section")
        name = str(record.get("eventName", ""))
        s3 = record["s3"]
        bucket = _bucket_name(s3)
        if not name.removeprefix("s3:").startswith("ObjectCreated:"):
            parsed.ignored.append(f"{name or 'unnamed event'} for {bucket}")
            continue
        parsed.objects.append(_object(bucket, s3.get("object"), "S3 record"))
    return parsed


def _parse_eventbridge(document: dict[str, Any]) -> ParsedMessage:
    detail = document.get("detail")
    if not isinstance(detail, dict):
        raise PoisonMessage("EventBridge event without a detail object")
    bucket = _bucket_name(detail)
    if document["detail-type"] != "Object Created":
        return ParsedMessage(ignored=[f"EventBridge {document['detail-type']} for {bucket}"])
    return ParsedMessage(objects=[_object(bucket, detail.get("object"), "EventBridge event")])

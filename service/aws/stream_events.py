"""The play-event outbox -> SNS.

Log changes write their `play.*` events into `stream_events` in the same transaction; this
publishes the unpublished ones, oldest first, each marked once SNS has accepted it. The work
runs under the stream's lock, so two workers never send the same row, and a row whose send
failed stays pending for the next attempt (after a segment, or the worker's periodic sweep).
A crash between SNS accepting a message and the row being marked can resend that one message:
subscribers deduplicate on `event_id`, which is the outbox row's id.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from service.store import Store
from service.telemetry import metrics

log = logging.getLogger(__name__)


def sns_attributes(payload: dict[str, Any]) -> dict[str, dict[str, str]]:
    """`event_type` and `stream`, so subscribers can filter on either."""
    return {
        "event_type": {"DataType": "String", "StringValue": payload["event_type"]},
        "stream": {"DataType": "String", "StringValue": payload["stream"]},
    }


async def publish_stream_events(
    store: Store, sns: Any, topic_arn: str, stream_id: int | None = None
) -> int:
    """Send pending play events (of one stream, or of all); returns how many went out."""
    sent = 0
    pending = await store.pending_stream_events(stream_id)
    streams = {e.stream_id: json.loads(e.payload_json)["stream"] for e in pending}
    for sid, name in sorted(streams.items()):
        async with store.stream_lock(name):
            # Read again under the lock: another worker may have sent some meanwhile.
            for event in await store.pending_stream_events(sid):
                payload = {"event_id": event.id, **json.loads(event.payload_json)}
                with metrics.counting_failures(metrics.SNS_PUBLISH_FAILURES.labels("play_event")):
                    await sns.publish(
                        TopicArn=topic_arn,
                        Message=json.dumps(payload, ensure_ascii=False),
                        MessageAttributes=sns_attributes(payload),
                    )
                await store.mark_stream_event_published(event.id)
                sent += 1
                log.info(
                    "%s: %s play %s (%s)",
                    name,
                    payload["event_type"],
                    payload["play"]["id"],
                    payload["play"]["song"]["title"],
                )
    return sent

"""What the SQS loop hands to a handler and gets back, and the dead-letter queue it sends
the messages no retry can fix to (service/worker/poller.py)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReceivedMessage:
    message_id: str
    receipt_handle: str
    body: str
    #: 1 on the first delivery; SQS counts every receive, including this one.
    receive_count: int


class Outcome(Enum):
    DONE = "done"
    #: The same as raising DeadLetter("poison_message", ...) without a reason.
    POISON = "poison"


class DeadLetter(Exception):
    """Raised by a handler for a message no retry can fix: it goes to the dead-letter queue
    at once, carrying `code` and `reason`."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class DeadLetterTarget:
    queue_url: str
    #: The redrive policy's maxReceiveCount: the receive after which SQS would move it.
    max_receive_count: int


#: SQS message attribute values are at most 256 KiB; reasons are kept short anyway.
_REASON_MAX_CHARS = 1000


class DeadLetters:
    """The queue's dead-letter queue, found from its redrive policy (looked up once)."""

    def __init__(self, sqs: Any, queue_url: str) -> None:
        self._sqs = sqs
        self._queue_url = queue_url
        self._target: DeadLetterTarget | None = None
        self._looked_up = False

    async def target(self) -> DeadLetterTarget | None:
        """The dead-letter queue, or None when the queue has none (or it cannot be read: it
        is asked again next time)."""
        if self._looked_up:
            return self._target
        try:
            attrs = await self._sqs.get_queue_attributes(
                QueueUrl=self._queue_url, AttributeNames=["RedrivePolicy"]
            )
            policy = attrs.get("Attributes", {}).get("RedrivePolicy")
            if policy:
                parsed = json.loads(policy)
                arn = str(parsed["deadLetterTargetArn"])
                _, _, _, _, account, name = arn.split(":", 5)
                found = await self._sqs.get_queue_url(
                    QueueName=name, QueueOwnerAWSAccountId=account
                )
                self._target = DeadLetterTarget(found["QueueUrl"], int(parsed["maxReceiveCount"]))
        except Exception as exc:  # asked again next time
            log.warning("could not read the queue's redrive policy: %s", exc)
            return None
        self._looked_up = True
        return self._target

    async def send(self, message: ReceivedMessage, code: str, reason: str) -> bool:
        """Send a copy of `message` to the dead-letter queue with why; whether it was sent."""
        log.error(
            "message %s goes to the dead-letter queue (receive %d): %s: %s; body: %.200r",
            message.message_id,
            message.receive_count,
            code,
            reason,
            message.body,
        )
        target = await self.target()
        if target is None:
            return False
        try:
            await self._sqs.send_message(
                QueueUrl=target.queue_url,
                MessageBody=message.body,
                MessageAttributes=_failure_attributes(message, code, reason),
            )
        except Exception as exc:
            log.warning("could not send %s to the dead-letter queue: %s", message.message_id, exc)
            return False
        return True


def _failure_attributes(message: ReceivedMessage, code: str, reason: str) -> dict[str, Any]:
    def text(value: str) -> dict[str, str]:
        return {"DataType": "String", "StringValue": value or "-"}

    return {
        "failure_code": text(code),
        "failure_reason": text(reason[:_REASON_MAX_CHARS]),
        "source_message_id": text(message.message_id),
        "receive_count": {"DataType": "Number", "StringValue": str(message.receive_count)},
        "failed_at": text(datetime.now(UTC).isoformat(timespec="seconds")),
    }

"""What the worker needs from the outside world, declared by the worker itself.

The handlers and the stream sweeper speak only to these Protocols; the AWS side implements
them (`aws/events.py`, `aws/objects.py`, `aws/reports.py`) without knowing they exist, and
service/resources.py hands the implementations over as one `WorkerIO`. So the worker never
imports the AWS side, and a test can give it anything of the same shape. The poller speaks
SQS's own API (receive, change visibility, delete in batches) and is given the SQS client.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from service.objects import Downloaded, ObjectCreated, ParsedMessage
from service.store import Store

#: A queue message's body -> the objects it announces; raises PoisonMessage for anything else.
MessageParser = Callable[[str], ParsedMessage]


class ObjectSource(Protocol):
    def download(
        self, obj: ObjectCreated, tmp_dir: str | None = None
    ) -> AbstractAsyncContextManager[Downloaded | None]:
        """The object's content in a temporary file for the duration of the block; None if
        it no longer exists."""
        ...


class ReportSink(Protocol):
    async def write_report(self, bucket: str, key: str, report_json: str) -> None:
        """Store a report document at `key` in `bucket`."""
        ...


class EventPublisher(Protocol):
    async def publish_report(self, report: dict[str, Any], report_location: str | None) -> None:
        """Announce a report (a dict as the ledger stores it), and where it was written."""
        ...

    async def publish_stream_events(self, store: Store) -> int:
        """Send the play events waiting in the store's outbox, and the streams' pending
        stream.down / stream.up events; how many went out."""
        ...


@dataclass(frozen=True)
class WorkerIO:
    """Everything outside the process the worker talks to."""

    #: The SQS client the poller receives from and deletes with.
    sqs: Any
    parse: MessageParser
    objects: ObjectSource
    reports: ReportSink
    #: None when no SNS topic is configured: nothing is published.
    events: EventPublisher | None

"""The SQS loop: receive when a slot is free, keep messages invisible while working, delete
after success in batches, back off failures, and on shutdown drain or release.

The poller knows nothing about S3 or audio: it hands each message to a handler and acts on the
outcome. A handler returns `Outcome.DONE` (delete it), raises DeadLetter (a body no retry can
fix) or raises anything else (a transient failure: the message stays and comes back after an
exponential backoff set through its visibility timeout).

Messages that will not be processed go to the dead-letter queue with their reason: a
DeadLetter at once, a transient failure on its last receive (the queue's redrive policy's
maxReceiveCount). The poller sends a copy of the body to the queue's dead-letter queue with
message attributes saying why (`failure_code`, `failure_reason`, `source_message_id`,
`receive_count`, `failed_at`) and deletes the original; the redrive policy itself would move
the message without a word. Should that fail (no redrive policy, no permission), the message
is left to the redrive policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from service.errors import ServiceError
from service.telemetry import metrics
from service.telemetry.logs import bound
from service.worker.messages import DeadLetter, DeadLetters, Outcome, ReceivedMessage

log = logging.getLogger(__name__)

#: SQS limits: entries per batch call, and the longest visibility timeout.
_SQS_BATCH_MAX = 10
_VISIBILITY_MAX_S = 43200


Handler = Callable[[ReceivedMessage], Awaitable[Outcome]]


class SqsPoller:
    """Processes one queue with at most `concurrency` messages in flight.

    `start()` runs the loop as a task; `stop()` stops receiving, lets in-flight messages finish
    for up to `shutdown_grace_s`, makes the rest visible again (visibility 0) so another
    worker takes them at once, flushes pending deletes and returns.
    """

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        handler: Handler,
        *,
        concurrency: int,
        batch_size: int,
        wait_s: int,
        visibility_timeout_s: int,
        shutdown_grace_s: float,
        retry_backoff_s: float = 10.0,
        retry_backoff_max_s: float = 900.0,
        delete_linger_s: float = 0.1,
    ) -> None:
        self._sqs = sqs
        self._queue_url = queue_url
        self._handler = handler
        self.concurrency = concurrency
        self._batch_size = min(batch_size, _SQS_BATCH_MAX)
        self._wait_s = wait_s
        self._visibility_s = visibility_timeout_s
        # Extend well before expiry, so one slow or failed extension call is not fatal.
        self._heartbeat_s = max(1.0, visibility_timeout_s / 3)
        self._grace_s = shutdown_grace_s
        self._retry_backoff_s = retry_backoff_s
        self._retry_backoff_max_s = retry_backoff_max_s
        self._delete_linger_s = delete_linger_s

        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._in_flight: dict[asyncio.Task[None], ReceivedMessage] = {}
        self._pending_deletes: list[ReceivedMessage] = []
        self._delete_wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._dead_letters = DeadLetters(sqs, queue_url)
        #: Messages this poller moved to the dead-letter queue (health output, tests).
        self.dead_lettered = 0
        #: time.monotonic() of the last receive call that SQS answered (health).
        self.last_receive_at: float | None = None
        self.started_at = time.monotonic()
        self.processed = 0
        self.failed = 0

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="sqs-poller")
        return self._task

    async def stop(self) -> None:
        """Stop receiving, drain within the grace period, release the rest; idempotent."""
        self._stopping.set()
        if self._task is not None:
            await asyncio.shield(self._task)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def healthy(self) -> bool:
        """Receiving normally: the loop runs and SQS answered recently (or every slot is busy,
        when the loop rightly does not ask for more)."""
        if self._task is None or self._task.done() or self.stopping:
            return False
        if self.in_flight >= self.concurrency:
            return True
        last = self.last_receive_at or self.started_at
        return time.monotonic() - last < self._wait_s + 60

    def status(self) -> dict[str, Any]:
        last = self.last_receive_at
        return {
            "status": "ok" if self.healthy() else "unhealthy",
            "stopping": self.stopping,
            "in_flight": self.in_flight,
            "concurrency": self.concurrency,
            "processed": self.processed,
            "failed": self.failed,
            "dead_lettered": self.dead_lettered,
            "last_receive_age_s": None if last is None else round(time.monotonic() - last, 1),
        }

    async def run(self) -> None:
        flusher = asyncio.create_task(self._flush_deletes_forever(), name="sqs-deleter")
        try:
            await self._receive_loop()
        finally:
            await self._shut_down(flusher)

    # --- receiving --------------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        failures = 0
        while not self.stopping:
            free = self.concurrency - len(self._in_flight)
            if free <= 0:
                # Receive only what can start now: a message received but waiting would
                # burn its visibility timeout and receive count for nothing.
                self._slot_freed.clear()
                await self._until_stopping_or(self._slot_freed.wait())
                continue
            try:
                messages = await self._receive(min(free, self._batch_size))
            except Exception as exc:  # network, throttling, a deleted queue: keep trying
                failures += 1
                delay = min(30.0, 0.5 * 2**failures)
                log.warning("SQS receive failed (%s); retrying in %.1f s", exc, delay)
                await self._until_stopping_or(asyncio.sleep(delay))
                continue
            failures = 0
            if self.stopping:
                # Received while the stop came in: hand them straight back.
                await self._release(messages)
                break
            for message in messages:
                task = asyncio.create_task(self._process(message), name=message.message_id)
                self._in_flight[task] = message
                metrics.WORKER_IN_FLIGHT.inc()
                task.add_done_callback(self._finished)

    async def _until_stopping_or(self, awaitable: Awaitable[Any]) -> bool:
        """Wait for `awaitable` unless stop() comes first (then cancel it); True if it ran."""
        work = asyncio.ensure_future(awaitable)
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if work.done():
            return True
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await work
        return False

    async def _receive(self, count: int) -> list[ReceivedMessage]:
        call = asyncio.ensure_future(
            self._sqs.receive_message(
                QueueUrl=self._queue_url,
                MaxNumberOfMessages=count,
                WaitTimeSeconds=self._wait_s,
                VisibilityTimeout=self._visibility_s,
                AttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
            )
        )
        if not await self._until_stopping_or(call):
            # Stopped mid long-poll. Should SQS have handed out messages in the abandoned
            # response, they reappear after their visibility timeout: delayed, never lost.
            return []
        response = call.result()
        self.last_receive_at = time.monotonic()
        now_ms = time.time() * 1000.0
        for m in response.get("Messages", []):
            metrics.WORKER_RECEIVED.inc()
            sent_ms = m.get("Attributes", {}).get("SentTimestamp")
            if sent_ms is not None and str(sent_ms).isdigit():
                metrics.WORKER_MESSAGE_AGE_SECONDS.observe(max(0.0, now_ms - int(sent_ms)) / 1000)
        return [
            ReceivedMessage(
                message_id=m["MessageId"],
                receipt_handle=m["ReceiptHandle"],
                body=m.get("Body", ""),
                receive_count=int(m.get("Attributes", {}).get("ApproximateReceiveCount", 1)),
            )
            for m in response.get("Messages", [])
        ]

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        metrics.WORKER_IN_FLIGHT.dec()
        self._slot_freed.set()

    # --- processing -------------------------------------------------------------------------

    async def _process(self, message: ReceivedMessage) -> None:
        with bound(message_id=message.message_id, receive_count=message.receive_count):
            await self._process_bound(message)

    async def _process_bound(self, message: ReceivedMessage) -> None:
        heartbeat = asyncio.create_task(self._keep_invisible(message))
        try:
            outcome = await self._handler(message)
        except asyncio.CancelledError:
            raise  # shutting down: the shutdown releases the message
        except DeadLetter as exc:
            await _cancel(heartbeat)
            self.failed += 1
            metrics.WORKER_FAILED.labels(exc.code).inc()
            await self._give_up(message, exc.code, exc.reason)
            return
        except Exception as exc:
            self.failed += 1
            metrics.WORKER_FAILED.labels(_code(exc)).inc()
            await _cancel(heartbeat)
            target = await self._dead_letters.target()
            if target is not None and message.receive_count >= target.max_receive_count:
                code = _code(exc)
                log.warning(
                    "message %s failed on its last receive (%d): %s: %s",
                    message.message_id,
                    message.receive_count,
                    type(exc).__name__,
                    exc,
                    exc_info=not _expected(exc),
                    extra={"event": "message.failed", "code": code},
                )
                await self._give_up(message, code, str(exc) or type(exc).__name__)
                return
            delay = self._backoff_s(message.receive_count)
            log.warning(
                "message %s failed (receive %d), retrying in %d s: %s: %s",
                message.message_id,
                message.receive_count,
                delay,
                type(exc).__name__,
                exc,
                exc_info=not _expected(exc),
                extra={"event": "message.retry", "code": _code(exc), "retry_in_s": delay},
            )
            await self._set_visibility(message, delay)
            return
        finally:
            await _cancel(heartbeat)
        if outcome is Outcome.DONE:
            self.processed += 1
            metrics.WORKER_SUCCEEDED.inc()
            log.info("message %s done", message.message_id, extra={"event": "message.done"})
            self._delete(message)
        else:
            self.failed += 1
            metrics.WORKER_FAILED.labels("poison_message").inc()
            await self._give_up(message, "poison_message", "the handler refused the message")

    def _delete(self, message: ReceivedMessage) -> None:
        self._pending_deletes.append(message)
        self._delete_wanted.set()

    async def _give_up(self, message: ReceivedMessage, code: str, reason: str) -> None:
        """Send `message` to the dead-letter queue with why, then delete it; without a
        dead-letter queue to send to, leave it visible so the redrive policy moves it."""
        if await self._dead_letters.send(message, code, reason):
            self.dead_lettered += 1
            metrics.WORKER_DEAD_LETTERED.inc()
            log.warning(
                "message %s dead-lettered: %s: %s",
                message.message_id,
                code,
                reason,
                extra={"event": "message.dead_lettered", "code": code},
            )
            self._delete(message)
            return
        # Visible again at once: the redrive policy counts receives, so the message reaches
        # the dead-letter queue after maxReceiveCount quick round trips.
        await self._set_visibility(message, 0)

    def _backoff_s(self, receive_count: int) -> int:
        delay = self._retry_backoff_s * 2 ** max(0, receive_count - 1)
        return max(1, int(min(delay, self._retry_backoff_max_s, _VISIBILITY_MAX_S)))

    async def _keep_invisible(self, message: ReceivedMessage) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s)
            try:
                await self._sqs.change_message_visibility(
                    QueueUrl=self._queue_url,
                    ReceiptHandle=message.receipt_handle,
                    VisibilityTimeout=self._visibility_s,
                )
            except Exception as exc:
                log.warning("could not extend visibility of %s: %s", message.message_id, exc)

    async def _set_visibility(self, message: ReceivedMessage, seconds: int) -> None:
        try:
            await self._sqs.change_message_visibility(
                QueueUrl=self._queue_url,
                ReceiptHandle=message.receipt_handle,
                VisibilityTimeout=seconds,
            )
        except Exception as exc:  # it comes back after its current timeout instead
            log.warning("could not change visibility of %s: %s", message.message_id, exc)

    # --- deleting ---------------------------------------------------------------------------

    async def _flush_deletes_forever(self) -> None:
        while True:
            await self._delete_wanted.wait()
            if len(self._pending_deletes) < _SQS_BATCH_MAX:
                await asyncio.sleep(self._delete_linger_s)  # gather a batch
            await self._flush_deletes()

    async def _flush_deletes(self) -> None:
        self._delete_wanted.clear()
        while self._pending_deletes:
            batch = self._pending_deletes[:_SQS_BATCH_MAX]
            del self._pending_deletes[:_SQS_BATCH_MAX]
            by_id = {str(i): m for i, m in enumerate(batch)}
            entries = [{"Id": i, "ReceiptHandle": m.receipt_handle} for i, m in by_id.items()]
            try:
                response = await self._sqs.delete_message_batch(
                    QueueUrl=self._queue_url, Entries=entries
                )
            except asyncio.CancelledError:
                self._pending_deletes[:0] = batch  # the final flush at shutdown retries them
                raise
            except Exception as exc:
                # Processed but not deleted: SQS redelivers and the ledger makes that a no-op.
                log.warning("deleting %d message(s) failed: %s", len(batch), exc)
                continue
            for failure in response.get("Failed", []):
                message = by_id.get(failure.get("Id"))
                log.warning(
                    "SQS did not delete message %s: %s %s (it will be redelivered and skipped)",
                    message.message_id if message else failure.get("Id"),
                    failure.get("Code"),
                    failure.get("Message"),
                )

    # --- shutting down ----------------------------------------------------------------------

    async def _shut_down(self, flusher: asyncio.Task[None]) -> None:
        tasks = list(self._in_flight)
        if tasks:
            log.info("stopping: waiting up to %.1f s for %d message(s)", self._grace_s, len(tasks))
            _, unfinished = await asyncio.wait(tasks, timeout=self._grace_s)
            released = [self._in_flight[t] for t in unfinished if t in self._in_flight]
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
            await self._release(released)
        await _cancel(flusher)
        await self._flush_deletes()
        log.info("SQS poller stopped (%d processed, %d failed)", self.processed, self.failed)

    async def _release(self, messages: list[ReceivedMessage]) -> None:
        """Make unfinished messages visible now, so another worker need not wait them out."""
        for start in range(0, len(messages), _SQS_BATCH_MAX):
            batch = messages[start : start + _SQS_BATCH_MAX]
            try:
                response = await self._sqs.change_message_visibility_batch(
                    QueueUrl=self._queue_url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": 0}
                        for i, m in enumerate(batch)
                    ],
                )
            except Exception as exc:
                log.warning("could not release %d message(s): %s", len(batch), exc)
                continue
            failed = response.get("Failed", [])
            for failure in failed:
                log.warning("could not release a message: %s", failure.get("Message"))
            log.info("released %d unfinished message(s)", len(batch) - len(failed))


def _code(exc: BaseException) -> str:
    """The failure's code for logs, metrics and dead-letter records."""
    return exc.code if isinstance(exc, ServiceError) else type(exc).__name__


def _expected(exc: BaseException) -> bool:
    """Failures worth one log line rather than a traceback: the known transient kinds."""
    return isinstance(exc, ServiceError | OSError | BotoCoreError | ClientError)


async def _cancel(task: asyncio.Task[Any]) -> None:
    if task.done():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

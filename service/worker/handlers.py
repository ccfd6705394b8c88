"""From an SQS message to the use case its object's key asks for.

    songs_to_index/...             -> index_path              -> SNS index.result
    songs_to_check/streams/...     -> process_stream_segment  -> the stream's log + play.* on SNS
    songs_to_check/...             -> identify_file           -> <key>.json in S3 + SNS
    anything else, *.json reports,
    non-audio suffixes             -> skipped with a log line (the message is deleted)

Prefixes match case-insensitively. Each object version (bucket + key + version id, sequencer
or ETag) is processed once: the ledger row written after the work holds the report, and the
report and SNS message go out once per row (see `_publish`), so a redelivered message changes
nothing. Bad audio (a permanent ServiceError) becomes an error report; anything else raises,
and the poller lets SQS redeliver. The message is parsed, the object downloaded and the report
written and announced through the ports of service/worker/ports.py, never S3 or SNS directly.
"""

from __future__ import annotations

import asyncio
import email.header
import json
import logging
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import PurePosixPath
from typing import Literal

from service.audio.formats import AUDIO_SUFFIXES
from service.audio.params import FingerprintParams
from service.core.identify.identify import identify_file
from service.core.index import IndexOptions, file_sha256, index_path
from service.core.reports import (
    Report,
    error_report,
    identify_report,
    index_report,
    report_key,
    stream_segment_report,
)
from service.core.streams.segment import StreamParams, process_stream_segment
from service.errors import ServiceError
from service.executor import CpuPool
from service.match import MatchParams
from service.objects import Downloaded, ObjectCreated, PoisonMessage
from service.schemas import SourceObject
from service.store import ProcessedObject, SongMeta, Store
from service.telemetry.logs import bound
from service.worker.messages import DeadLetter, Outcome, ReceivedMessage
from service.worker.ports import EventPublisher, MessageParser, ObjectSource, ReportSink

log = logging.getLogger(__name__)

INDEX_PREFIX = "songs_to_index/"
CHECK_PREFIX = "songs_to_check/"
STREAM_PREFIX = "songs_to_check/streams/"


class Action(Enum):
    """What an object is for; the value is the ledger's `kind`."""

    INDEX = "index"
    IDENTIFY = "identify"
    STREAM = "stream_segment"


#: Event type prefix of each action's reports and SNS messages.
_EVENT_PREFIX: dict[Action, Literal["index", "identify", "stream"]] = {
    Action.INDEX: "index",
    Action.IDENTIFY: "identify",
    Action.STREAM: "stream",
}


@dataclass(frozen=True)
class Route:
    action: Action | None
    #: Why the object is skipped (when `action` is None).
    reason: str = ""


def route_for(key: str) -> Route:
    lowered = key.lower()
    if lowered.startswith(INDEX_PREFIX):
        action = Action.INDEX
    elif lowered.startswith(STREAM_PREFIX):
        action = Action.STREAM
    elif lowered.startswith(CHECK_PREFIX):
        action = Action.IDENTIFY
    else:
        return Route(None, "not under songs_to_index/ or songs_to_check/")
    suffix = PurePosixPath(lowered).suffix
    if suffix == ".json":
        return Route(None, "a report file")
    if suffix not in AUDIO_SUFFIXES:
        return Route(None, f"suffix {suffix or '(none)'!r} is not an audio or video file")
    return Route(action)


class PublicationInProgress(ServiceError):
    """Another worker processed this object and is publishing its report right now."""

    code = "publication_in_progress"
    status = 503


def _header_text(value: str) -> str:
    """S3 user metadata travels in HTTP headers; non-ASCII values arrive RFC 2047-encoded."""
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (LookupError, ValueError, UnicodeDecodeError):
        return value


def meta_from_object(metadata: dict[str, str]) -> SongMeta:
    """Song fields from `x-amz-meta-*` (boto's `Metadata`, keys without the prefix); what is
    missing falls back to the file's tags and then its name (core.index.resolve_meta)."""
    values = {k.lower().replace("-", "_"): _header_text(v) for k, v in metadata.items()}
    return SongMeta(
        title=values.get("title", ""),
        artist=values.get("artist"),
        album=values.get("album"),
        isrc=values.get("isrc"),
        external_id=values.get("external_id"),
    )


class ObjectHandler:
    """The poller's handler: parses a message and processes every object it announces."""

    def __init__(
        self,
        *,
        store: Store,
        pool: CpuPool,
        parse: MessageParser,
        objects: ObjectSource,
        reports: ReportSink,
        events: EventPublisher | None,
        match_params: MatchParams,
        bucket: str | None,
        fp_params: FingerprintParams,
        publish_lease_s: float = 60.0,
        tmp_dir: str | None = None,
        stream_params: StreamParams | None = None,
        max_index_audio_s: float | None = None,
        max_identify_audio_s: float | None = None,
    ) -> None:
        self._store = store
        self._pool = pool
        self._parse = parse
        self._objects = objects
        self._reports = reports
        self._events = events
        self._match_params = match_params
        self._fp_params = fp_params
        self._bucket = bucket
        self._publish_lease_s = publish_lease_s
        self._tmp_dir = tmp_dir
        self._stream_params = stream_params or StreamParams()
        self._max_index_audio_s = max_index_audio_s
        self._max_identify_audio_s = max_identify_audio_s

    async def __call__(self, message: ReceivedMessage) -> Outcome:
        try:
            parsed = self._parse(message.body)
        except PoisonMessage as exc:
            raise DeadLetter("poison_message", str(exc)) from exc
        for reason in parsed.ignored:
            log.info("message %s: ignoring %s", message.message_id, reason)
        for obj in parsed.objects:
            with bound(s3_bucket=obj.bucket, s3_key=obj.key):
                await self.handle_object(obj)
        return Outcome.DONE

    async def handle_object(self, obj: ObjectCreated) -> None:
        where = f"s3://{obj.bucket}/{obj.key}"
        route = route_for(obj.key)
        if route.action is None:
            log.info("skipping %s: %s", where, route.reason)
            return
        if self._bucket and obj.bucket != self._bucket:
            log.warning("skipping %s: not the configured bucket %s", where, self._bucket)
            return
        token = obj.version_token
        if token is not None and await self._finish_recorded(obj, token):
            return
        log.info("processing %s (%s)", where, route.action.value)
        started = time.perf_counter()
        async with self._objects.download(obj, self._tmp_dir) as downloaded:
            if downloaded is None:
                log.warning("skipping %s: the object no longer exists", where)
                return
            if token is None:  # a hand-made event without an ETag: the object has one
                token = ObjectCreated(
                    obj.bucket, obj.key, downloaded.etag, downloaded.version_id
                ).version_token
                if token is None:
                    raise ValueError(f"S3 returned neither ETag nor version for {where}")
                if await self._finish_recorded(obj, token):
                    return
            report = await self._process(route.action, obj, downloaded, started)
        row, inserted = await self._store.record_processed(
            obj.bucket, obj.key, token, route.action.value, report.model_dump_json(indent=2)
        )
        if inserted or await self._take_over(row):
            await self._publish(row)

    # --- idempotency ------------------------------------------------------------------------

    async def _finish_recorded(self, obj: ObjectCreated, token: str) -> bool:
        """True when the ledger knows this version (publishing its report if that never
        completed); False when it still has to be processed."""
        row = await self._store.get_processed(obj.bucket, obj.key, token)
        if row is None:
            return False
        if await self._take_over(row):
            await self._publish(row)
        return True

    async def _take_over(self, row: ProcessedObject) -> bool:
        """For a row someone else recorded: False if it is published (nothing to do), True if
        its publisher's claim lapsed and we now hold it; raises while the claim is live."""
        where = f"s3://{row.bucket}/{row.key}"
        if row.published_at is not None:
            log.info("already processed %s (%s): nothing to do", where, row.version_token)
            return False
        if await self._store.claim_publication(
            row.bucket, row.key, row.version_token, self._publish_lease_s
        ):
            log.warning("publishing the stored result of %s (its publisher went away)", where)
            return True
        raise PublicationInProgress(f"{where} is being published by another worker")

    # --- work -------------------------------------------------------------------------------

    async def _process(
        self, action: Action, obj: ObjectCreated, downloaded: Downloaded, started: float
    ) -> Report:
        source = SourceObject.of(obj, downloaded.etag, downloaded.version_id)

        def elapsed_ms() -> float:
            return (time.perf_counter() - started) * 1000.0

        try:
            match action:
                case Action.INDEX:
                    # The object's URI and digest are kept with the song, so that `reindex`
                    # can rebuild it from S3 under another index format.
                    digest = await asyncio.to_thread(file_sha256, downloaded.path)
                    options = IndexOptions(
                        meta_from_object(downloaded.metadata),
                        filename=PurePosixPath(obj.key).name,
                        source=f"s3://{obj.bucket}/{obj.key}",
                        file_sha256=digest,
                    )
                    indexed = await index_path(
                        self._store,
                        self._pool,
                        downloaded.path,
                        options,
                        params=self._fp_params,
                        max_audio_s=self._max_index_audio_s,
                    )
                    return index_report(indexed, source, elapsed_ms())
                case Action.IDENTIFY:
                    # Long files (a recorded radio hour) get a timeline in their report.
                    result = await identify_file(
                        self._store,
                        self._pool,
                        downloaded.path,
                        self._match_params,
                        self._fp_params,
                        timeline=None,
                        max_audio_s=self._max_identify_audio_s,
                    )
                    return identify_report(result, source, elapsed_ms())
                case Action.STREAM:
                    segment = await process_stream_segment(
                        self._store,
                        self._pool,
                        obj.bucket,
                        obj.key,
                        downloaded.path,
                        self._match_params,
                        uploaded_at=downloaded.last_modified,
                        params=self._stream_params,
                        fp_params=self._fp_params,
                    )
                    return stream_segment_report(segment, source, elapsed_ms())
        except ServiceError as exc:
            if not exc.permanent:
                raise
            log.warning(
                "s3://%s/%s: %s: %s (reported, not retried)",
                obj.bucket,
                obj.key,
                exc.code,
                exc.message,
            )
            event_type = f"{_EVENT_PREFIX[action]}.error"
            return error_report(event_type, exc, source, elapsed_ms())  # type: ignore[arg-type]

    # --- publishing -------------------------------------------------------------------------

    async def _publish(self, row: ProcessedObject) -> None:
        """Write the report (songs_to_check/ only), send the SNS message, then mark the row
        published. Only the holder of the row's claim gets here, so a report goes out once;
        a crash in between leaves the row unpublished and the redelivered message publishes
        the stored result, not a new one. A stream segment's own report stays in the ledger
        (a segment that fails still sends its `stream.error`); what goes out for it are the
        play events its log change queued in the outbox."""
        report = json.loads(row.result_json)
        action = Action(row.kind)
        location = None
        if action is Action.IDENTIFY:
            location = report_key(row.key)
            await self._reports.write_report(row.bucket, location, row.result_json)
        if action is Action.STREAM and report["event_type"] == "stream.segment":
            if self._events is not None:
                await self._events.publish_stream_events(self._store)
        elif self._events is not None:
            await self._events.publish_report(report, location)
        await self._store.mark_published(row.bucket, row.key, row.version_token)
        log.info(
            "s3://%s/%s: %s%s",
            row.bucket,
            row.key,
            report["event_type"],
            f" (match: {report['match']})" if "match" in report else "",
            extra={
                "event": "object.published",
                "event_type": report["event_type"],
                "processing_ms": report.get("processing_ms"),
            },
        )

"""Prometheus metrics, on `GET /metrics` of the API and of the standalone worker's health port.

Everything is recorded in the one service process, on prometheus-client's process registry:
the CPU pool's children return how long they computed along with the result (executor.py)
and the parent records it, so no multiprocess directory is needed, and a poller running inside
the API shows its worker metrics on the API's /metrics. The metrics are process-wide by
nature (one process, one exposition), hence module-level like prometheus-client's own
registry. Gauges of state read at scrape time (the database pool, the catalogue's size) are
set by `refresh_*` from what the scraping host passes in. README.md, Metrics, lists them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

if TYPE_CHECKING:
    from service.store import Store

__all__ = ["CONTENT_TYPE_LATEST", "exposition"]

log = logging.getLogger(__name__)

_NS = "songdetect"

#: Seconds: an HTTP request, a CPU task, a lookup (10 ms .. 2 min).
_LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
#: Seconds a message waited in SQS, or a segment lags its live time (1 s .. 1 day).
_AGE_BUCKETS_S = (1, 5, 15, 30, 60, 120, 300, 900, 3600, 4 * 3600, 86400)

HTTP_REQUEST_SECONDS = Histogram(
    f"{_NS}_http_request_duration_seconds",
    "HTTP request latency by route template, method and status code.",
    ["route", "method", "status"],
    buckets=_LATENCY_BUCKETS_S,
)
HTTP_REJECTED_BUSY = Counter(
    f"{_NS}_http_rejected_busy_total",
    "Uploads answered 503 because the CPU pool's queue was full (backpressure).",
    ["route"],
)
IDENTIFY_RESULTS = Counter(
    f"{_NS}_identify_results_total",
    "Identifications by outcome (match, no_match) and the best match's evidence "
    "(landmarks, envelope; none without a match).",
    ["outcome", "evidence"],
)
INDEX_RESULTS = Counter(
    f"{_NS}_index_results_total",
    "Songs indexed (created) or found already indexed (existing).",
    ["outcome"],
)
CPU_TASK_SECONDS = Histogram(
    f"{_NS}_cpu_task_seconds",
    "Time a CPU pool process spent on a task (decode + fingerprint: analyse_query for "
    "identify and segments, analyse_file for indexing), queue wait excluded.",
    ["task"],
    buckets=_LATENCY_BUCKETS_S,
)
CPU_WAIT_SECONDS = Histogram(
    f"{_NS}_cpu_pool_wait_seconds",
    "Time a task waited in the CPU pool's queue before a process took it.",
    buckets=_LATENCY_BUCKETS_S,
)
LOOKUP_SECONDS = Histogram(
    f"{_NS}_identify_lookup_seconds",
    "Time an identification spent after its analysis: fingerprint lookups and matching.",
    buckets=_LATENCY_BUCKETS_S,
)
CPU_POOL_WORKERS = Gauge(f"{_NS}_cpu_pool_workers", "Processes of the CPU pool.")
CPU_POOL_BUSY = Gauge(f"{_NS}_cpu_pool_busy_workers", "CPU pool processes working now.")
CPU_POOL_QUEUED = Gauge(
    f"{_NS}_cpu_pool_queue_depth", "Tasks waiting for a CPU pool process (all callers)."
)
CPU_POOL_QUEUE_LIMIT = Gauge(
    f"{_NS}_cpu_pool_queue_limit",
    "CPU_QUEUE_MAX: waiting tasks beyond which uploads get 503 (-1: unbounded).",
)
DB_POOL_SIZE = Gauge(f"{_NS}_db_pool_size", "Open connections of the PostgreSQL pool.")
DB_POOL_IN_USE = Gauge(f"{_NS}_db_pool_in_use", "Connections of the pool handed out now.")
CATALOGUE_SONGS = Gauge(f"{_NS}_catalogue_songs", "Songs in the catalogue.")
CATALOGUE_HOURS = Gauge(f"{_NS}_catalogue_audio_hours", "Hours of audio in the catalogue.")
CATALOGUE_FINGERPRINTS = Gauge(
    f"{_NS}_catalogue_fingerprints", "Fingerprint hashes in the catalogue."
)
WORKER_RECEIVED = Counter(f"{_NS}_worker_messages_received_total", "SQS messages received.")
WORKER_SUCCEEDED = Counter(
    f"{_NS}_worker_messages_succeeded_total", "Messages handled and deleted."
)
WORKER_FAILED = Counter(
    f"{_NS}_worker_messages_failed_total",
    "Message attempts that failed (retried later, or dead-lettered), by error code.",
    ["code"],
)
WORKER_DEAD_LETTERED = Counter(
    f"{_NS}_worker_messages_dead_lettered_total", "Messages moved to the dead-letter queue."
)
WORKER_IN_FLIGHT = Gauge(f"{_NS}_worker_messages_in_flight", "Messages being processed now.")
WORKER_MESSAGE_AGE_SECONDS = Histogram(
    f"{_NS}_worker_message_age_seconds",
    "Age of a message when received: now minus its SentTimestamp.",
    buckets=_AGE_BUCKETS_S,
)
STREAM_LAST_SEGMENT = Gauge(
    f"{_NS}_stream_last_segment_timestamp_seconds",
    "Unix time the stream's latest segment was processed.",
    ["stream"],
)
STREAM_SEGMENT_LAG_SECONDS = Gauge(
    f"{_NS}_stream_segment_lag_seconds",
    "Wall clock minus the stream clock at the end of its latest segment, as it was processed.",
    ["stream"],
)
STREAM_UP = Gauge(
    f"{_NS}_stream_up",
    "1 while the stream delivers segments, 0 once it is down (STREAM_DOWN_AFTER_S).",
    ["stream"],
)
STREAM_HEALTH_EVENTS = Counter(
    f"{_NS}_stream_health_events_total", "stream.down and stream.up events recorded.", ["event"]
)
PLAY_EVENTS = Counter(
    f"{_NS}_play_events_total",
    "Play events written to the airplay log (play.started, play.ended, play.updated, ...).",
    ["event"],
)
SNS_PUBLISH_FAILURES = Counter(
    f"{_NS}_sns_publish_failures_total",
    "SNS publish calls that failed (reports, play and stream events).",
    ["kind"],
)


@contextmanager
def counting_failures(counter: Counter) -> Iterator[None]:
    """Count the block's exceptions (re-raised) on `counter`."""
    try:
        yield
    except Exception:
        counter.inc()
        raise


def exposition() -> bytes:
    return generate_latest(REGISTRY)


def record_identify(matched: bool, evidence: str | None, lookup_s: float) -> None:
    IDENTIFY_RESULTS.labels("match" if matched else "no_match", evidence or "none").inc()
    LOOKUP_SECONDS.observe(lookup_s)


def record_index(created: bool) -> None:
    INDEX_RESULTS.labels("created" if created else "existing").inc()


def record_play_event(event_type: str) -> None:
    PLAY_EVENTS.labels(event_type).inc()


def record_segment(stream: str, lag_s: float) -> None:
    STREAM_LAST_SEGMENT.labels(stream).set(time.time())
    STREAM_SEGMENT_LAG_SECONDS.labels(stream).set(lag_s)


def record_cpu_pool(workers: int, busy: int, queued: int) -> None:
    CPU_POOL_WORKERS.set(workers)
    CPU_POOL_BUSY.set(busy)
    CPU_POOL_QUEUED.set(queued)


def refresh_db_pool(size: int, in_use: int) -> None:
    DB_POOL_SIZE.set(size)
    DB_POOL_IN_USE.set(in_use)


def refresh_catalogue(songs: int, audio_s: float, fingerprints: int) -> None:
    CATALOGUE_SONGS.set(songs)
    CATALOGUE_HOURS.set(audio_s / 3600.0)
    CATALOGUE_FINGERPRINTS.set(fingerprints)


async def refresh_store_gauges(store: Store) -> None:
    """Set the database pool and catalogue gauges from `store`, as a scrape comes in; a
    store that cannot answer leaves them at their last values rather than failing the
    scrape."""
    usage = store.connection_pool_usage()
    if usage is not None:
        refresh_db_pool(*usage)
    try:
        stats = await store.stats()
    except Exception as exc:
        log.warning("catalogue size unavailable for /metrics: %s", exc)
        return
    refresh_catalogue(stats.songs, stats.audio_s, stats.fingerprints)

"""`GET /healthz` for the standalone worker, for an ECS container health check.

A plain asyncio server rather than a web framework: one route, no dependencies, and it runs on
the worker's own loop, so an answer also proves the loop is not blocked. 200 while the poller
receives normally (SQS answered within the last long poll plus a minute, or every slot is
busy) and its CPU pool can analyse audio, 503 otherwise (stopping, SQS unreachable for too
long, or analysis processes that died and cannot be restarted), with the poller's counters as
JSON either way. It starts before the database is open: while the worker starts (migrating, or
waiting for another replica's migrations) it answers 200 `{"status": "starting"}`, and 503 if
start-up failed. `GET /readyz` answers the same; `GET /metrics` is the process's Prometheus
exposition (service/telemetry/metrics.py), the catalogue and database pool gauges read from
the store as the scrape comes in.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from service.startup import Startup
from service.telemetry import metrics
from service.worker.poller import SqsPoller

log = logging.getLogger(__name__)

_READ_TIMEOUT_S = 5.0


#: (healthy, JSON body) of the worker right now.
Probe = Callable[[], tuple[bool, dict[str, Any]]]


def worker_probe(startup: Startup, poller: Callable[[], SqsPoller | None]) -> Probe:
    """Start-up's phase until the poller runs, then the poller's own health and its CPU
    pool's."""

    def probe() -> tuple[bool, dict[str, Any]]:
        running = poller()
        if running is None:
            return not startup.failed, {"status": startup.phase, "detail": startup.detail}
        body = running.status()
        healthy = running.healthy()
        if startup.opened is not None:
            pool_ok = startup.opened.pool.healthy
            body["cpu_pool"] = "ok" if pool_ok else "broken"
            healthy = healthy and pool_ok
        body["status"] = "ok" if healthy else "unhealthy"
        return healthy, body

    return probe


async def start_health_server(
    probe: Probe, host: str, port: int, startup: Startup | None = None
) -> asyncio.Server:
    """The server; `startup`'s store, once open, feeds the store gauges of /metrics."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT_S)
            request_line = request.split(b"\r\n", 1)[0].decode("latin-1")
            method, _, rest = request_line.partition(" ")
            path = rest.partition(" ")[0]
            route = path.split("?")[0]
            content_type = "application/json"
            if method not in ("GET", "HEAD") or route not in ("/healthz", "/readyz", "/metrics"):
                status = "404 Not Found"
                payload = json.dumps({"error": {"code": "not_found", "message": path}}).encode()
            elif route == "/metrics":
                if startup is not None and startup.opened is not None:
                    await metrics.refresh_store_gauges(startup.opened.store)
                status, payload = "200 OK", metrics.exposition()
                content_type = metrics.CONTENT_TYPE_LATEST
            else:
                healthy, body = probe()
                status = "200 OK" if healthy else "503 Service Unavailable"
                payload = json.dumps(body).encode()
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
            ).encode()
            writer.write(head if method == "HEAD" else head + payload)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass  # a probe that hung up or sent garbage gets nothing
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    server = await asyncio.start_server(answer, host, port)
    log.info("worker health check on http://%s:%d/healthz", host, port)
    return server

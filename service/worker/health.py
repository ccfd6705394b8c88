"""`GET /healthz` for the standalone worker, for an ECS container health check.

A plain asyncio server rather than a web framework: one route, no dependencies, and it runs on
the worker's own loop, so an answer also proves the loop is not blocked. 200 while the poller
receives normally (SQS answered within the last long poll plus a minute, or every slot is
busy) and its CPU pool can analyse audio, 503 otherwise (stopping, SQS unreachable for too long,
or analysis processes that died and cannot be restarted), with the poller's counters
as JSON either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from service.core.cpu import CpuPool
from service.worker.poller import SqsPoller

log = logging.getLogger(__name__)

_READ_TIMEOUT_S = 5.0


async def start_health_server(
    poller: SqsPoller, host: str, port: int, pool: CpuPool | None = None
) -> asyncio.Server:
    """Serve /healthz; 503 also while `pool` has lost its processes and cannot restart them."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT_S)
            request_line = request.split(b"\r\n", 1)[0].decode("latin-1")
            method, _, rest = request_line.partition(" ")
            path = rest.partition(" ")[0]
            if method not in ("GET", "HEAD") or path.split("?")[0] != "/healthz":
                status, body = "404 Not Found", {"error": {"code": "not_found", "message": path}}
            else:
                body = poller.status()
                healthy = poller.healthy()
                if pool is not None:
                    body["cpu_pool"] = "ok" if pool.healthy else "broken"
                    healthy = healthy and pool.healthy
                body["status"] = "ok" if healthy else "unhealthy"
                status = "200 OK" if healthy else "503 Service Unavailable"
            payload = json.dumps(body).encode()
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
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

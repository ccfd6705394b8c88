"""Backpressure for the uploads that analyse audio: POST /identify and POST /songs are
admitted by the CPU pool (`CpuPool.admit`) before their body is read, and answered 503
`busy` with Retry-After when its queue is full (CPU_QUEUE_MAX), instead of being spooled to
disk and queued without bound."""

from __future__ import annotations

from contextlib import ExitStack

from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.uploads import send_json_error
from service.executor import CpuPoolBusy
from service.telemetry import metrics

#: The routes whose work is an analysis in the CPU pool.
ANALYSING = frozenset({("POST", "/identify"), ("POST", "/songs")})


class Backpressure:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"].rstrip("/")) not in ANALYSING:
            await self.app(scope, receive, send)
            return
        startup = getattr(scope["app"].state, "startup", None)
        opened = getattr(startup, "opened", None)
        if opened is None or opened.pool is None:
            await self.app(scope, receive, send)  # the route answers 503 not_ready
            return
        with ExitStack() as admitted:
            try:
                admitted.enter_context(opened.pool.admit())
            except CpuPoolBusy as exc:
                metrics.HTTP_REJECTED_BUSY.labels(scope["path"].rstrip("/")).inc()
                retry_after = [(b"retry-after", str(exc.retry_after_s).encode())]
                await send_json_error(send, exc.status, exc.code, exc.message, retry_after)
                return
            await self.app(scope, receive, send)

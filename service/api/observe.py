"""What each request leaves for the operators: its identity in the log lines and its latency
in the metrics.

The request id is `X-Request-ID` taken from the client (when it is a sane token) or made up,
bound to every line logged while the request is handled (uvicorn's access line included) and
echoed in the response's `X-Request-ID` header. The latency is observed by route template
(`/songs/{song_id}`, never the raw path, so the label set stays small), method and status."""

from __future__ import annotations

import re
import time
import uuid

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.telemetry import metrics
from service.telemetry.logs import request_bound

REQUEST_ID_HEADER = "X-Request-ID"
#: What a client's request id may look like: a UUID, a trace id, a load balancer's
#: `Root=1-...`; anything else (too long, control characters) is replaced by our own.
_SANE_ID = re.compile(r"[A-Za-z0-9._:=;/+-]{1,128}")


def request_id_of(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            given = value.decode("latin-1")
            if _SANE_ID.fullmatch(given):
                return given
            break
    return uuid.uuid4().hex


class RequestContext:
    """Outermost middleware: every response, the early errors of the other middlewares
    included, carries the request id its log lines carry."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        header = (b"x-request-id", request_id.encode("latin-1"))
        status = 500  # an exception before any response: Starlette's error middleware's 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            with request_bound(request_id):
                await self.app(scope, receive, send_with_id)
        finally:
            metrics.HTTP_REQUEST_SECONDS.labels(
                route_of(scope), scope["method"], str(status)
            ).observe(time.perf_counter() - started)


def route_of(scope: Scope) -> str:
    """The route template that handled the request; for one answered by a middleware before
    routing (401, 413, 503 busy), the template it would have reached; `unmatched` else."""
    route = scope.get("route")
    if route is None:
        for candidate in scope["app"].router.routes:
            if candidate.matches(scope)[0] is Match.FULL:
                route = candidate
                break
    return getattr(route, "path", None) or "unmatched"

"""App factory and lifespan: open the resources once (in the background, behind the probes),
close them in reverse."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from service import __version__
from service.api import (
    routes_health,
    routes_identify,
    routes_metrics,
    routes_reports,
    routes_songs,
    routes_streams,
)
from service.api.backpressure import Backpressure
from service.api.deps import ApiKeyBeforeBody, require_api_key
from service.api.errors import install_error_handlers
from service.api.observe import RequestContext
from service.api.openapi import install_docs, operation_id
from service.api.routes_web import install_web
from service.api.uploads import BodySizeLimit
from service.settings import Settings
from service.startup import OnReady, started_in_background
from service.tempfiles import sweep_orphans

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, worker: OnReady | None = None) -> FastAPI:
    """The API; `worker`, when given, starts the SQS poller inside it once the resources are
    open (service/hosts.py passes it when SQS_QUEUE_URL is set and RUN_WORKER_IN_API is true),
    with the AWS clients opened among them. It stops (drains within WORKER_SHUTDOWN_GRACE_S,
    releases the rest) before they close."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sweep_orphans()  # uploads a killed predecessor left behind
        # The store opens (and migrates) in the background: uvicorn binds its port as soon as
        # this yields, so /healthz answers during a long migration or a wait for another
        # replica's migration lock, /readyz and the routes answer 503 until it is done, and a
        # SIGTERM meanwhile ends the process at once. app.state holds this one container.
        async with started_in_background(
            settings, worker, aws=worker is not None
        ) as app.state.startup:
            yield

    app = FastAPI(
        title="song-detection",
        version=__version__,
        description="Identify songs of your catalogue in audio files and live streams. "
        'Every error answers `{"error": {"code", "message"}}`; each operation lists '
        "the codes it can return.",
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
        docs_url=None,  # install_docs serves /docs and /redoc without a CDN
        redoc_url=None,
    )
    install_error_handlers(app)
    # Outermost last: the request id is bound first, then the key is checked, then the
    # CPU pool's queue and the size, all before the body is read.
    app.add_middleware(BodySizeLimit, max_bytes=settings.upload_max_bytes)
    app.add_middleware(Backpressure)
    app.add_middleware(ApiKeyBeforeBody, api_key=settings.api_key)
    app.add_middleware(RequestContext)
    guarded = [Depends(require_api_key)]
    app.include_router(routes_health.router)
    app.include_router(routes_metrics.router)
    app.include_router(routes_songs.router, dependencies=guarded)
    app.include_router(routes_identify.router, dependencies=guarded)
    app.include_router(routes_streams.router, dependencies=guarded)
    app.include_router(routes_reports.router, dependencies=guarded)
    install_docs(app)
    install_web(app)
    return app

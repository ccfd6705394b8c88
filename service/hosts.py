"""The processes this service runs, put together from its adapters.

The adapters never import one another (tests/unit/test_import_rules.py); this module is the one
place that combines them: the API serving with the SQS poller inside it when configured, and
the standalone worker. `song-detection serve` and `song-detection worker` (service/cli.py) start
them from here, the API under uvicorn with HTTP_PROTOCOL.
"""

from __future__ import annotations

from functools import partial

from fastapi import FastAPI

from service.api.app import create_app as create_api
from service.api.http_protocol import HTTP_PROTOCOL
from service.settings import Settings
from service.worker.runtime import run_worker, start_in_api

__all__ = ["HTTP_PROTOCOL", "create_app", "run_worker"]


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API, running the SQS poller inside it when SQS_QUEUE_URL is set and
    RUN_WORKER_IN_API is true."""
    settings = settings or Settings()
    worker = None
    if settings.sqs_queue_url and settings.run_worker_in_api:
        worker = partial(start_in_api, settings)
    return create_api(settings, worker)

"""`GET /metrics`: Prometheus exposition of the process's metrics (service/telemetry/metrics.py).

No API key, like the probes: Prometheus scrapes the task directly. The gauges of state (the
database pool, the catalogue's size) are read from the store as the scrape comes in; a store
that cannot answer leaves them at their last values rather than failing the scrape.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from service.telemetry import metrics

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    operation_id="metrics",
    response_class=Response,
    responses={
        200: {
            "content": {"text/plain": {"example": "songdetect_catalogue_songs 1234.0\n"}},
            "description": "Prometheus text exposition format 0.0.4.",
        }
    },
)
async def prometheus_metrics(request: Request) -> Response:
    """Every metric of this process, the SQS worker's too when it runs inside the API."""
    opened = getattr(request.app.state.startup, "opened", None)
    if opened is not None:
        await metrics.refresh_store_gauges(opened.store)
    return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE_LATEST)

"""Liveness and readiness probes (no API key: load balancers call them)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.api.deps import StartupDep
from service.api.errors import error_response
from service.api.openapi import error_responses
from service.schemas import HealthOut, WorkerStatusOut

router = APIRouter(tags=["health"])

#: What a 503 during start-up tells a client to wait before asking again.
STARTING_RETRY_AFTER_S = 5

_POOL_BROKEN = "the analysis processes died and cannot be restarted"


@router.get(
    "/healthz",
    response_model=HealthOut,
    response_model_exclude_none=True,
    responses=error_responses("start_failed", "unhealthy"),
)
async def healthz(startup: StartupDep) -> HealthOut | JSONResponse:
    """The process is alive and its event loop answers, also while it is still starting
    (migrating, or waiting for another replica's migrations); 503 once start-up has failed or
    its analysis processes died and cannot be restarted, so that the orchestrator replaces it."""
    if startup.failed:
        return error_response(503, "start_failed", startup.detail)
    if startup.opened is not None and not startup.opened.pool.healthy:
        return error_response(503, "unhealthy", _POOL_BROKEN)
    return HealthOut(status="ok")


@router.get(
    "/readyz",
    response_model=HealthOut,
    response_model_exclude_none=True,
    responses=error_responses("not_ready"),
)
async def readyz(startup: StartupDep) -> HealthOut | JSONResponse:
    """Start-up is done, the database answers, every migration has run and audio can be
    analysed."""
    if startup.opened is None:
        response = error_response(503, "not_ready", startup.detail)
        if not startup.failed:
            response.headers["Retry-After"] = str(STARTING_RETRY_AFTER_S)
        return response
    if not startup.opened.pool.healthy:
        return error_response(503, "not_ready", _POOL_BROKEN)
    try:
        ready = await startup.opened.store.ready()
    except Exception as exc:  # any failure to reach the store means "not ready", not a 500
        return error_response(503, "not_ready", f"store unavailable: {exc}")
    if not ready:
        return error_response(503, "not_ready", "database migrations are pending")
    worker = startup.worker_status
    return HealthOut(
        status="ready",
        worker=None if worker is None else WorkerStatusOut.model_validate(worker()),
    )

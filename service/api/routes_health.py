"""Liveness and readiness probes (no API key: load balancers call them)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.api.deps import StoreDep
from service.api.errors import error_response
from service.api.schemas import HealthOut

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut)
async def healthz() -> HealthOut:
    """The process is alive and its event loop answers."""
    return HealthOut(status="ok")


@router.get("/readyz", response_model=HealthOut, responses={503: {"description": "Not ready"}})
async def readyz(store: StoreDep) -> HealthOut | JSONResponse:
    """The database answers and every migration has run."""
    try:
        ready = await store.ready()
    except Exception as exc:  # any failure to reach the store means "not ready", not a 500
        return error_response(503, "not_ready", f"store unavailable: {exc}")
    if not ready:
        return error_response(503, "not_ready", "database migrations are pending")
    return HealthOut(status="ready")

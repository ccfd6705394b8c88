"""Liveness and readiness probes (no API key: load balancers call them)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.api.deps import PoolDep, StoreDep
from service.api.errors import error_response
from service.api.schemas import HealthOut

router = APIRouter(tags=["health"])


_POOL_BROKEN = "the analysis processes died and cannot be restarted"


@router.get(
    "/healthz", response_model=HealthOut, responses={503: {"description": "Needs replacing"}}
)
async def healthz(pool: PoolDep) -> HealthOut | JSONResponse:
    """The process is alive, its event loop answers and it can still analyse audio."""
    if not pool.healthy:
        return error_response(503, "unhealthy", _POOL_BROKEN)
    return HealthOut(status="ok")


@router.get("/readyz", response_model=HealthOut, responses={503: {"description": "Not ready"}})
async def readyz(store: StoreDep, pool: PoolDep) -> HealthOut | JSONResponse:
    """The database answers, every migration has run and audio can be analysed."""
    if not pool.healthy:
        return error_response(503, "not_ready", _POOL_BROKEN)
    try:
        ready = await store.ready()
    except Exception as exc:  # any failure to reach the store means "not ready", not a 500
        return error_response(503, "not_ready", f"store unavailable: {exc}")
    if not ready:
        return error_response(503, "not_ready", "database migrations are pending")
    return HealthOut(status="ready")

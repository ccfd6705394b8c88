"""Typed dependencies: routes receive the store, the CPU pool and settings from the app's
lifespan state, never from module globals."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from service.core.cpu import CpuPool
from service.errors import NotReady, Unauthorized
from service.matching import MatchParams
from service.settings import Settings
from service.startup import Opened, Startup
from service.store.base import Store


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _startup(request: Request) -> Startup:
    return request.app.state.startup


def _opened(request: Request) -> Opened:
    """What start-up opened; 503 `not_ready` while it is still under way (or failed)."""
    startup: Startup = request.app.state.startup
    if startup.opened is None:
        raise NotReady(startup.detail)
    return startup.opened


def _store(request: Request) -> Store:
    return _opened(request).store


def _pool(request: Request) -> CpuPool:
    return _opened(request).pool


def _match_params(request: Request) -> MatchParams:
    return request.app.state.match_params


SettingsDep = Annotated[Settings, Depends(_settings)]
StartupDep = Annotated[Startup, Depends(_startup)]
StoreDep = Annotated[Store, Depends(_store)]
PoolDep = Annotated[CpuPool, Depends(_pool)]
MatchParamsDep = Annotated[MatchParams, Depends(_match_params)]

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)


async def require_api_key(
    settings: SettingsDep, key: Annotated[str | None, Security(_api_key_header)]
) -> None:
    """When API_KEY is configured, every non-health route needs the same `X-API-Key`."""
    if settings.api_key is None:
        return
    if key is None or not hmac.compare_digest(key.encode(), settings.api_key.encode()):
        raise Unauthorized("missing or wrong X-API-Key header")

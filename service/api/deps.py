"""Typed dependencies: routes receive the store, the CPU pool and settings from the one
container the app's lifespan puts on app.state (service/startup.py Startup), never from module
globals."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.uploads import send_json_error
from service.audio.params import FingerprintParams
from service.errors import NotReady, Unauthorized
from service.executor import CpuPool
from service.match import MatchParams
from service.resources import Resources
from service.settings import Settings
from service.startup import Startup
from service.store import Store


def _settings(request: Request) -> Settings:
    settings = _startup(request).settings
    assert settings is not None  # the lifespan starts up from the app's settings
    return settings


def _startup(request: Request) -> Startup:
    return request.app.state.startup


def _opened(request: Request) -> Resources:
    """What start-up opened; 503 `not_ready` while it is still under way (or failed)."""
    startup = _startup(request)
    if startup.opened is None:
        raise NotReady(startup.detail)
    return startup.opened


def _store(request: Request) -> Store:
    return _opened(request).store


def _pool(request: Request) -> CpuPool:
    pool = _opened(request).pool
    assert pool is not None  # the API's start-up always opens one
    return pool


def _match_params(request: Request) -> MatchParams:
    match_params = _startup(request).match_params
    assert match_params is not None
    return match_params


def _fp_params(request: Request) -> FingerprintParams:
    return _startup(request).fp_params


SettingsDep = Annotated[Settings, Depends(_settings)]
StartupDep = Annotated[Startup, Depends(_startup)]
StoreDep = Annotated[Store, Depends(_store)]
PoolDep = Annotated[CpuPool, Depends(_pool)]
MatchParamsDep = Annotated[MatchParams, Depends(_match_params)]
FingerprintParamsDep = Annotated[FingerprintParams, Depends(_fp_params)]

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)


async def require_api_key(
    settings: SettingsDep, key: Annotated[str | None, Security(_api_key_header)]
) -> None:
    """When API_KEY is configured, every non-health route needs the same `X-API-Key`."""
    if settings.api_key is None:
        return
    if not key_matches(key, settings.api_key):
        raise Unauthorized(_UNAUTHORIZED)


_UNAUTHORIZED = "missing or wrong X-API-Key header"


def key_matches(given: str | None, api_key: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), api_key.encode())


class ApiKeyBeforeBody:
    """Answers 401 to a request that carries a body (POST, PUT, PATCH) without the right
    `X-API-Key` before any of the body is read: FastAPI reads and spools a whole multipart
    upload before dependencies such as `require_api_key` run. Every route that takes a body
    needs the key; the probes are GETs."""

    _METHODS = frozenset({"POST", "PUT", "PATCH"})

    def __init__(self, app: ASGIApp, api_key: str | None) -> None:
        self.app = app
        self.api_key = api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.api_key is not None
            and scope["type"] == "http"
            and scope["method"] in self._METHODS
        ):
            given = next((v for k, v in scope["headers"] if k == b"x-api-key"), None)
            text = None if given is None else given.decode("latin-1")
            if not key_matches(text, self.api_key):
                await send_json_error(send, 401, "unauthorized", _UNAUTHORIZED)
                return
        await self.app(scope, receive, send)

"""The web page at `/`: static ES modules and CSS shipped in the package (no CDN, no build).

The page is public, like any static file; every API call it makes carries the user's
`X-API-Key` when the service requires one.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

WEB_DIR = Path(__file__).with_name("web")

# The page loads nothing from elsewhere; recordings and picked files play from blob: URLs.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; media-src 'self' blob:; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


class _Revalidated(StaticFiles):
    """The page's modules, revalidated on every load (ETag): after an upgrade a browser must
    not run a cached module of the old version beside the new ones."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.setdefault("Cache-Control", "no-cache")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response


def install_web(app: FastAPI) -> None:
    """Serve the page at `/` and its modules under `/ui/`."""

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", media_type="text/html", headers=_HEADERS)

    app.mount("/ui", _Revalidated(directory=WEB_DIR), name="ui")

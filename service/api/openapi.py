"""The OpenAPI contract as exact as the code: each route's error responses with the one
`ErrorOut` shape, every code it can answer (with an example each), readable operation ids,
and /docs and /redoc served offline.

Swagger UI and ReDoc come from the `fastapi-offline` package, which ships their official
distribution files (swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js, under their
MIT licences): the pages load nothing from a CDN and work without a network.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from service.schemas import ErrorOut

#: Every error code the API answers: its status, when it happens, and an example message.
ERRORS: dict[str, tuple[int, str, str]] = {
    "bad_request": (400, "The request is malformed.", "`to` must be later than `from`"),
    "empty_file": (400, "The uploaded file is empty.", "the uploaded file is empty"),
    "unauthorized": (
        401,
        "API_KEY is configured and `X-API-Key` is missing or wrong.",
        "missing or wrong X-API-Key header",
    ),
    "not_found": (404, "No such song, stream or play.", "no song with id 42"),
    "payload_too_large": (
        413,
        "The upload exceeds UPLOAD_MAX_BYTES (refused before it is read).",
        "upload exceeds the limit of 209715200 bytes",
    ),
    "not_audio": (
        415,
        "The file is no audio or video container we decode, or has no audio stream.",
        "no audio stream in the file",
    ),
    "validation_error": (
        422,
        "A parameter or field is invalid.",
        "limit: Input should be less than or equal to 1000",
    ),
    "undecodable_audio": (
        422,
        "The container was recognised but decoding failed (truncated, corrupt).",
        "the audio could not be decoded: Invalid data found when processing input",
    ),
    "audio_too_short": (422, "Too little audio to fingerprint.", "audio too short: 0.4 s"),
    "audio_too_long": (
        422,
        "More audio than MAX_IDENTIFY_AUDIO_S / MAX_INDEX_AUDIO_S.",
        "the audio is longer than the limit of 7200 s",
    ),
    "no_fingerprints": (
        422,
        "The audio yields no fingerprints (silence, a steady tone): nothing to index.",
        "the audio yields no fingerprints (silence or a steady tone?)",
    ),
    "internal_error": (500, "An unexpected error; the log has it.", "internal error"),
    "index_mismatch": (
        500,
        "The catalogue was built with other fingerprint parameters.",
        "the index was built with fingerprint version 3",
    ),
    "busy": (
        503,
        "The CPU pool's queue is full (CPU_QUEUE_MAX): retry after Retry-After seconds.",
        "the analysis queue is full (5 uploads and tasks for 1 process(es)); retry later",
    ),
    "not_ready": (
        503,
        "Still starting (opening the database, migrating) or start-up failed.",
        "opening the database and applying pending migrations",
    ),
    "store_unavailable": (
        503,
        "The database does not answer; transient.",
        "cannot connect to PostgreSQL: connection refused",
    ),
    "analysis_unavailable": (
        503,
        "The analysis processes died and could not finish the work.",
        "the analysis processes cannot be started; retry later",
    ),
    "start_failed": (503, "Start-up failed: the process needs replacing.", "start-up failed"),
    "unhealthy": (
        503,
        "The analysis processes died and cannot be restarted.",
        "the analysis processes died and cannot be restarted",
    ),
}

#: What any route behind the API key may answer besides its own errors.
GUARDED = ("unauthorized", "not_ready", "store_unavailable", "internal_error")
#: What an upload that is analysed may answer besides GUARDED.
UPLOAD = (
    "bad_request",
    "empty_file",
    "payload_too_large",
    "not_audio",
    "validation_error",
    "undecodable_audio",
    "audio_too_short",
    "audio_too_long",
    "busy",
    "analysis_unavailable",
    "index_mismatch",
)

_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying (busy, not_ready, store_unavailable).",
        "schema": {"type": "integer"},
    }
}


def error_responses(*codes: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the error `codes` a route answers: one entry per status with
    the ErrorOut schema and an example per code."""
    by_status: dict[int, list[str]] = {}
    for code in dict.fromkeys(codes):
        by_status.setdefault(ERRORS[code][0], []).append(code)
    responses: dict[int | str, dict[str, Any]] = {}
    for status, grouped in sorted(by_status.items()):
        entry: dict[str, Any] = {
            "model": ErrorOut,
            "description": " ".join(f"`{c}`: {ERRORS[c][1]}" for c in grouped),
            "content": {
                "application/json": {
                    "examples": {
                        c: {
                            "summary": ERRORS[c][1],
                            "value": {"error": {"code": c, "message": ERRORS[c][2]}},
                        }
                        for c in grouped
                    }
                }
            },
        }
        if status == 503:
            entry["headers"] = _RETRY_AFTER
        responses[status] = entry
    return responses


def operation_id(route: APIRoute) -> str:
    """The endpoint function's name: `identify`, `add_song`, `list_plays`, ..."""
    return route.name


#: Where the documentation pages' scripts and styles are served from.
ASSETS_URL = "/docs-assets"


def install_docs(app: FastAPI) -> None:
    """/docs (Swagger UI) and /redoc from the assets in the package; create the app with
    `docs_url=None, redoc_url=None`."""
    assets = files("fastapi_offline") / "static"
    app.mount(ASSETS_URL, StaticFiles(directory=str(assets)), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"
    oauth_url = "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=oauth_url,
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
        )

    @app.get(oauth_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )

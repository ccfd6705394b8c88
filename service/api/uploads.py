"""Uploads: bounded in size while they stream in, then handed to workers as a file path."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import PurePath

from fastapi import UploadFile
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import EmptyFile, PayloadTooLarge
from service.tempfiles import temp_prefix

_COPY_CHUNK_BYTES = 1 << 20


#: Room for the multipart framing around the file (boundaries, part headers, form fields).
MULTIPART_ALLOWANCE_BYTES = 64 * 1024


class BodySizeLimit:
    """Rejects request bodies over `max_bytes` (plus the multipart framing's allowance) with
    413 before they are spooled to disk.

    Content-Length is checked up front; chunked bodies are counted as they arrive, so a client
    cannot fill the disk by leaving the header out. The message names `max_bytes`, the
    setting the client is up against.
    """

    def __init__(
        self, app: ASGIApp, max_bytes: int, allowance_bytes: int = MULTIPART_ALLOWANCE_BYTES
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.allowance_bytes = allowance_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes + self.allowance_bytes
        message = f"upload exceeds the limit of {self.max_bytes} bytes"
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await send_json_error(send, 413, "payload_too_large", message)
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            received = await receive()
            if received["type"] == "http.request":
                seen += len(received.get("body", b""))
                if seen > limit:
                    # An HTTPException, because FastAPI turns any other error raised while
                    # parsing a form into a generic 400.
                    raise HTTPException(413, message)
            return received

        await self.app(scope, counted, send)


async def send_json_error(
    send: Send,
    status: int,
    code: str,
    message: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Answer with the API's error shape straight from ASGI middleware, closing the
    connection (the request body, if any, is never read)."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def saved_upload(upload: UploadFile, max_bytes: int) -> AsyncIterator[str]:
    """Copy an upload to a named temporary file (worker processes open it by path)."""
    suffix = PurePath(upload.filename or "").suffix[:16]
    fd, path = tempfile.mkstemp(prefix=temp_prefix("upload"), suffix=suffix)
    try:
        written = 0
        with os.fdopen(fd, "wb") as out:
            while chunk := await upload.read(_COPY_CHUNK_BYTES):
                written += len(chunk)
                if written > max_bytes:
                    raise PayloadTooLarge(f"upload exceeds the limit of {max_bytes} bytes")
                out.write(chunk)
        if written == 0:
            raise EmptyFile("the uploaded file is empty")
        yield path
    finally:
        os.unlink(path)

"""Uploads: bounded in size while they stream in, then handed to workers as a file path."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import PurePath

from fastapi import UploadFile
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import EmptyFile, PayloadTooLarge

_COPY_CHUNK_BYTES = 1 << 20


class BodySizeLimit:
    """Rejects request bodies over `max_bytes` with 413 before they are spooled to disk.

    Content-Length is checked up front; chunked bodies are counted as they arrive, so a client
    cannot fill the disk by leaving the header out.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await _send_413(send, limit)
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # An HTTPException, because FastAPI turns any other error raised while
                    # parsing a form into a generic 400.
                    raise HTTPException(413, f"upload exceeds the limit of {limit} bytes")
            return message

        await self.app(scope, counted, send)


async def _send_413(send: Send, limit: int) -> None:
    body = (
        '{"error":{"code":"payload_too_large","message":"upload exceeds the limit of '
        f'{limit} bytes"}}}}'
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def saved_upload(upload: UploadFile, max_bytes: int) -> AsyncIterator[str]:
    """Copy an upload to a named temporary file (worker processes open it by path)."""
    suffix = PurePath(upload.filename or "").suffix[:16]
    fd, path = tempfile.mkstemp(prefix="upload-", suffix=suffix)
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

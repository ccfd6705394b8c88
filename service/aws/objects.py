"""Uploaded objects downloaded from S3 into temporary files.

`S3ObjectSource` is what the worker's `ObjectSource` (service/worker/ports.py) asks for.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import PurePosixPath
from typing import Any

from botocore.exceptions import ClientError

from service.objects import Downloaded, ObjectCreated
from service.tempfiles import temp_prefix

_DOWNLOAD_CHUNK_BYTES = 1 << 20


class S3ObjectSource:
    def __init__(self, s3: Any) -> None:
        self._s3 = s3

    async def list_keys(self, bucket: str, prefix: str) -> AsyncIterator[str]:
        """Every key under `prefix`, in S3's (lexicographic) order, page by page."""
        paginator = self._s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield item["Key"]

    @asynccontextmanager
    async def download(
        self, obj: ObjectCreated, tmp_dir: str | None = None
    ) -> AsyncIterator[Downloaded | None]:
        """Stream the object into a temporary file (same suffix, which helps the demuxer),
        removed when the block ends; None if it has been deleted since the event."""
        request = {"Bucket": obj.bucket, "Key": obj.key}
        if obj.version_id and obj.version_id != "null":
            request["VersionId"] = obj.version_id
        try:
            response = await self._s3.get_object(**request)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "NoSuchVersion"}:
                yield None
                return
            raise
        fd, path = tempfile.mkstemp(
            prefix=temp_prefix("download"), suffix=PurePosixPath(obj.key).suffix, dir=tmp_dir
        )
        try:
            body = response["Body"]
            with os.fdopen(fd, "wb") as out:
                async with body:  # returns the connection to the pool, read or not
                    async for chunk in body.iter_chunks(_DOWNLOAD_CHUNK_BYTES):
                        await asyncio.to_thread(out.write, chunk)
            yield Downloaded(
                path=path,
                etag=(response.get("ETag") or "").strip('"') or None,
                version_id=response.get("VersionId"),
                metadata=response.get("Metadata") or {},
                last_modified=response.get("LastModified"),
            )
        finally:
            os.unlink(path)

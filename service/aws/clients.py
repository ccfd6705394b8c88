"""The worker's AWS clients: one aioboto3 session, one client per service, opened once.

Clients are opened when the worker starts and closed when it stops (never at import time), so
every S3, SQS and SNS call reuses the same connection pools. `AWS_ENDPOINT_URL` (the setting
`aws_endpoint_url`) points all three at LocalStack or moto; on AWS it stays unset and the
default credential chain (environment, ECS task role) applies.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aioboto3
from aiobotocore.config import AioConfig

from service.settings import Settings


@dataclass
class AwsClients:
    s3: Any
    sqs: Any
    sns: Any
    _stack: AsyncExitStack

    @classmethod
    async def open(cls, settings: Settings) -> AwsClients:
        session = aioboto3.Session(region_name=settings.aws_region)
        config = AioConfig(
            # Every in-flight message may download, write a report and publish at once.
            max_pool_connections=max(10, 3 * settings.worker_concurrency + 2),
            connect_timeout=10,
            # Longer than the SQS long poll, so a quiet queue is not a timeout.
            read_timeout=settings.sqs_wait_s + 40,
            retries={"mode": "standard", "max_attempts": 4},
        )
        stack = AsyncExitStack()
        try:
            clients = [
                await stack.enter_async_context(
                    session.client(name, endpoint_url=settings.aws_endpoint_url, config=config)
                )
                for name in ("s3", "sqs", "sns")
            ]
        except BaseException:
            await stack.aclose()
            raise
        return cls(*clients, _stack=stack)

    async def close(self) -> None:
        await self._stack.aclose()

    async def __aenter__(self) -> AwsClients:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

"""AWS for tests: moto's server on a loopback port, spoken to over real HTTP by real clients.

One moto server per session, reset before every test that asks for `aws`, which then creates
the worker's world from scratch: the upload bucket, the event queue with a dead-letter queue
(redrive after 2 receives), and the result topic subscribed to an inbox queue (raw delivery
off, so results arrive in SNS envelopes as on AWS). The developer's `AWS_*` environment is
cleared so no test can reach a real account.

Test code waits on AWS through `asyncio.to_thread`, so the worker running on the test's event
loop keeps going while a test waits for its results.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer

from service.settings import Settings

REGION = "us-east-1"
MAX_RECEIVE_COUNT = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(f"{url}/moto-api/", timeout=2)
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    yield url
    server.stop()


@pytest.fixture
def aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake credentials only: no profile, config file or real key of the developer's."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    missing = str(tmp_path / "no-aws-config")
    monkeypatch.setenv("AWS_CONFIG_FILE", missing)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", missing)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@dataclass
class SnsMessage:
    message: dict[str, Any]
    attributes: dict[str, str]


class AwsWorld:
    """The bucket, queues and topic of one test, with helpers that never block the loop."""

    def __init__(self, endpoint_url: str) -> None:
        self.endpoint_url = endpoint_url
        kwargs: dict[str, Any] = {"endpoint_url": endpoint_url, "region_name": REGION}
        self.s3 = boto3.client("s3", **kwargs)
        self.sqs = boto3.client("sqs", **kwargs)
        self.sns = boto3.client("sns", **kwargs)
        self.bucket = "uploads"
        self.s3.create_bucket(Bucket=self.bucket)
        self.dlq_url = self.sqs.create_queue(QueueName="upload-events-dlq")["QueueUrl"]
        dlq_arn = self._arn(self.dlq_url)
        self.queue_url = self.sqs.create_queue(
            QueueName="upload-events",
            Attributes={
                "VisibilityTimeout": "30",
                "RedrivePolicy": json.dumps(
                    {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVE_COUNT)}
                ),
            },
        )["QueueUrl"]
        self.topic_arn = self.sns.create_topic(Name="results")["TopicArn"]
        self.inbox_url = self.sqs.create_queue(QueueName="results-inbox")["QueueUrl"]
        self.sns.subscribe(
            TopicArn=self.topic_arn, Protocol="sqs", Endpoint=self._arn(self.inbox_url)
        )

    def _arn(self, queue_url: str) -> str:
        return self.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]

    def settings(self, database_url: str, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database_url,
            "environment": "test",
            "cpu_workers": 1,
            "aws_endpoint_url": self.endpoint_url,
            "aws_region": REGION,
            "s3_bucket": self.bucket,
            "sqs_queue_url": self.queue_url,
            "sns_topic_arn": self.topic_arn,
            "sqs_wait_s": 1,
            "sqs_visibility_timeout_s": 30,
            "worker_concurrency": 2,
            "worker_shutdown_grace_s": 10,
            "worker_health_port": 0,
        }
        return Settings(**{**values, **overrides})

    # --- set-up -----------------------------------------------------------------------------

    def notify_queue_on_upload(self) -> None:
        """The bucket sends its ObjectCreated events to the worker's queue (as deployed)."""
        self.s3.put_bucket_notification_configuration(
            Bucket=self.bucket,
            NotificationConfiguration={
                "QueueConfigurations": [
                    {"QueueArn": self._arn(self.queue_url), "Events": ["s3:ObjectCreated:*"]}
                ]
            },
        )

    def upload(self, key: str, path: Path, metadata: dict[str, str] | None = None) -> str:
        """Put a file; returns its ETag (unquoted)."""
        with path.open("rb") as f:
            response = self.s3.put_object(
                Bucket=self.bucket, Key=key, Body=f, Metadata=metadata or {}
            )
        return response["ETag"].strip('"')

    def send(self, body: str | dict[str, Any]) -> str:
        """Queue a message; its MessageId."""
        return self.sqs.send_message(
            QueueUrl=self.queue_url, MessageBody=body if isinstance(body, str) else json.dumps(body)
        )["MessageId"]

    # --- observing --------------------------------------------------------------------------

    def object_json(self, key: str) -> dict[str, Any] | None:
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "NoSuchKey":
                return None
            raise
        return json.loads(body)

    def keys(self) -> list[str]:
        listed = self.s3.list_objects_v2(Bucket=self.bucket)
        return sorted(o["Key"] for o in listed.get("Contents", []))

    def queue_depth(self, queue_url: str) -> int:
        """Visible plus in-flight messages."""
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(
            attrs["ApproximateNumberOfMessagesNotVisible"]
        )

    def receive(self, queue_url: str) -> list[dict[str, Any]]:
        """One receive (1-s long poll) of up to 10 messages, deleted once received."""
        response = self.sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = response.get("Messages", [])
        for m in messages:
            self.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
        return messages

    async def take(self, queue_url: str, count: int, timeout_s: float = 30.0) -> list[dict]:
        """Receive (and delete) until `count` messages came or the timeout passed."""
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        while len(got) < count and time.monotonic() < deadline:
            got += await asyncio.to_thread(self.receive, queue_url)
        return got

    async def sns_messages(
        self, count: int, timeout_s: float = 30.0, quiet_s: float = 1.0
    ) -> list[SnsMessage]:
        """The result messages published to the topic: waits for `count`, then `quiet_s`
        more to catch any extra (a duplicate must show up in the count)."""
        raw = await self.take(self.inbox_url, count, timeout_s)
        raw += await self.take(self.inbox_url, 10_000, quiet_s)
        out = []
        for m in raw:
            envelope = json.loads(m["Body"])
            assert envelope["Type"] == "Notification"
            attributes = {k: v["Value"] for k, v in envelope.get("MessageAttributes", {}).items()}
            out.append(SnsMessage(json.loads(envelope["Message"]), attributes))
        return out

    async def until(
        self, check: Callable[[], Any], timeout_s: float = 30.0, every_s: float = 0.2
    ) -> Any:
        """Poll `check` (run in a thread) until it returns something truthy."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = await asyncio.to_thread(check)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s} s waiting for {check}")
            await asyncio.sleep(every_s)


@pytest.fixture
def aws(moto_url: str, aws_environment: None) -> AwsWorld:
    httpx.post(f"{moto_url}/moto-api/reset", timeout=10).raise_for_status()
    return AwsWorld(moto_url)


def s3_event(bucket: str, key: str, etag: str, *, size: int = 1000) -> dict[str, Any]:
    """An S3 event notification as S3 sends it (key URL-encoded with `+` for spaces)."""
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": REGION,
                "eventTime": "2025-01-01T00:00:00.000Z",
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "uploads",
                    "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                    "object": {
                        "key": quote_plus(key, safe="/"),
                        "size": size,
                        "eTag": etag,
                        "sequencer": "0065F3A1B2C3D4E5F6",
                    },
                },
            }
        ]
    }


def eventbridge_event(bucket: str, key: str, etag: str, *, size: int = 1000) -> dict[str, Any]:
    """EventBridge's "Object Created" event for S3, as a rule delivers it to a queue."""
    return {
        "version": "0",
        "id": "17793124-05d4-b198-2fde-7ededc63b103",
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": "123456789012",
        "time": "2025-01-01T00:00:00Z",
        "region": REGION,
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {
            "version": "0",
            "bucket": {"name": bucket},
            "object": {
                "key": quote_plus(key, safe="/"),
                "size": size,
                "etag": etag,
                "sequencer": "00617F08299329D189",
            },
            "request-id": "N4N7GDK58NMKJ12R",
            "requester": "123456789012",
            "reason": "PutObject",
        },
    }


def sns_envelope(inner: dict[str, Any]) -> dict[str, Any]:
    """`inner` as an SNS topic delivers it to a queue without raw message delivery."""
    return {
        "Type": "Notification",
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": f"arn:aws:sns:{REGION}:123456789012:uploads",
        "Subject": "Amazon S3 Notification",
        "Message": json.dumps(inner),
        "Timestamp": "2025-01-01T00:00:00.000Z",
        "SignatureVersion": "1",
        "Signature": "EXAMPLE",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/cert.pem",
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
    }

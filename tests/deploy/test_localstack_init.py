"""The LocalStack init script, run as is against moto's server, creates the wiring it promises.

The script uses only AWS CLI calls with `--endpoint-url` from AWS_ENDPOINT_URL, so the same
file that LocalStack runs from ready.d runs here against `moto.server.ThreadedMotoServer`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tests.deploy.wiring import ROOT

SCRIPT = ROOT / "infra" / "localstack" / "ready.d" / "10-song-detection.sh"
REGION = "eu-west-1"  # not us-east-1: create-bucket then needs its LocationConstraint
BUCKET = "song-detection-init-test"


def aws_cli_path() -> str:
    """PATH with this interpreter's scripts first: the test extras install `aws` there."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    if shutil.which("aws", path=aws_cli_path()) is None:
        pytest.skip("the AWS CLI is not installed (pip install -e '.[test]' brings it)")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def run_script(endpoint: str, **env: str) -> subprocess.CompletedProcess[str]:
    # None of the developer's AWS configuration: only what LocalStack's container would have.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    clean.update(
        PATH=aws_cli_path(),
        AWS_ENDPOINT_URL=endpoint,
        AWS_REGION=REGION,
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        S3_BUCKET=BUCKET,
        **env,
    )
    return subprocess.run(
        [str(SCRIPT)], env=clean, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def created(endpoint: str) -> dict[str, Any]:
    first = run_script(endpoint)
    assert first.returncode == 0, first.stderr
    # LocalStack may run it again on a restart with state: that must not fail either.
    second = run_script(endpoint)
    assert second.returncode == 0, second.stderr
    return {"stdout": first.stdout}


def client(endpoint: str, service: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def queue_url(endpoint: str, name: str) -> str:
    return client(endpoint, "sqs").get_queue_url(QueueName=name)["QueueUrl"]


def test_queue_redrives_into_its_dead_letter_queue(endpoint: str, created: dict) -> None:
    sqs = client(endpoint, "sqs")
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url(endpoint, "song-detection-events"), AttributeNames=["All"]
    )["Attributes"]
    dlq_arn = sqs.get_queue_attributes(
        QueueUrl=queue_url(endpoint, "song-detection-events-dlq"), AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == dlq_arn
    assert int(redrive["maxReceiveCount"]) == 5
    assert attributes["VisibilityTimeout"] == "120"
    policy = json.loads(attributes["Policy"])
    (statement,) = policy["Statement"]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement["Condition"]["ArnEquals"]["aws:SourceArn"] == f"arn:aws:s3:::{BUCKET}"


def test_bucket_and_topic_exist(endpoint: str, created: dict) -> None:
    s3 = client(endpoint, "s3")
    location = s3.get_bucket_location(Bucket=BUCKET)["LocationConstraint"]
    assert location == REGION
    topics = [t["TopicArn"] for t in client(endpoint, "sns").list_topics()["Topics"]]
    assert any(arn.endswith(":song-detection-results") for arn in topics)
    assert "songs_to_index/ and songs_to_check/" not in created["stdout"]  # prints names only
    assert BUCKET in created["stdout"]


def test_uploads_under_both_prefixes_reach_the_queue(endpoint: str, created: dict) -> None:
    s3, sqs = client(endpoint, "s3"), client(endpoint, "sqs")
    url = queue_url(endpoint, "song-detection-events")
    config = s3.get_bucket_notification_configuration(Bucket=BUCKET)["QueueConfigurations"]
    assert sorted(c["Filter"]["Key"]["FilterRules"][0]["Value"] for c in config) == [
        "songs_to_check/",
        "songs_to_index/",
    ]
    # Drain the s3:TestEvent(s) sent when the notification was configured (the queue
    # long-polls 20 s by default: ask for no wait).
    while sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
        "Messages"
    ):
        pass
    keys = [
        "songs_to_index/Artist - Song.mp3",
        "songs_to_check/clip one.m4a",
        "songs_to_check/streams/radio-one/radio-one.000001.ts",
        "elsewhere/not-watched.mp3",
    ]
    for key in keys:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"\x00" * 16)
    seen: list[str] = []
    for _ in range(5):
        received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        messages = received.get("Messages", [])
        for message in messages:
            for record in json.loads(message["Body"]).get("Records", []):
                assert record["eventName"].startswith("ObjectCreated:")
                assert record["s3"]["bucket"]["name"] == BUCKET
                seen.append(unquote_plus(record["s3"]["object"]["key"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        if len(seen) >= 3:
            break
    assert sorted(seen) == sorted(keys[:3])


def test_script_fails_loudly_when_the_endpoint_is_down() -> None:
    if shutil.which("aws", path=aws_cli_path()) is None:
        pytest.skip("the AWS CLI is not installed")
    result = run_script("http://127.0.0.1:9", AWS_MAX_ATTEMPTS="1")
    assert result.returncode != 0

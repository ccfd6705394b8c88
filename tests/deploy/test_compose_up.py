"""`docker compose up` for real, then the README's walk-through, then `down -v`.

No public registry is reachable here, so the images docker-compose.yml names are built
locally: the app image as `song-detection:local` (infra/docker/build-image.sh) and one stand-in
image for `postgres:15` and `localstack/localstack:4.14.0` (infra/docker/build-standin-image.sh:
Debian's PostgreSQL 15 and moto's server, cached under /var/cache/song-detection), brought in by
the documented override infra/docker/compose.standins.yml. Everything else is the compose file
as users run it: its environment, volumes, LocalStack init script, health checks and
dependency conditions. The stack runs under its own project name, on free host ports
(API_PORT, LOCALSTACK_PORT).

Compose is Docker's plugin (`docker compose`) when installed, else Debian's `docker-compose`.
Skipped, with the reason, where neither is installed or no Docker engine runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.audio_fixtures import encode, excerpt, synth_song
from tests.deploy.docker_helpers import docker, free_port
from tests.deploy.wiring import ROOT

pytestmark = pytest.mark.docker

OVERRIDE = ROOT / "infra" / "docker" / "compose.standins.yml"
APP_IMAGE = "song-detection:local"  # what docker-compose.yml names


def compose_command() -> list[str] | None:
    plugin = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    if plugin.returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


class Stack:
    def __init__(self, command: list[str]) -> None:
        self.project = f"sdcompose{uuid.uuid4().hex[:8]}"
        self.api_port, self.aws_port = free_port(), free_port()
        self.command = [
            *command,
            "-f", str(ROOT / "docker-compose.yml"),
            "-f", str(OVERRIDE),
            "-p", self.project,
        ]  # fmt: skip
        self.env = {
            **os.environ,
            "API_PORT": str(self.api_port),
            "LOCALSTACK_PORT": str(self.aws_port),
        }

    def run(self, *args: str, timeout: float = 300, check: bool = True) -> str:
        done = subprocess.run(
            [*self.command, *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check:
            assert done.returncode == 0, (
                f"compose {args}: {done.stdout[-2000:]}{done.stderr[-3000:]}"
            )
        return done.stdout

    def logs(self) -> str:
        return self.run("logs", "--no-color", "--tail", "60", check=False)[-6000:]

    def container(self, service: str) -> str:
        return self.run("ps", "-q", service).strip()

    def health(self, service: str) -> str:
        cid = self.container(service)
        return docker("inspect", "-f", "{{.State.Health.Status}}", cid, check=False).stdout.strip()

    def wait_for(self, predicate: Callable[[], Any], what: str, timeout_s: float = 180) -> Any:
        deadline = time.monotonic() + timeout_s
        while not (result := predicate()):
            assert time.monotonic() < deadline, f"no {what}:\n{self.logs()}"
            time.sleep(1)
        return result


@pytest.fixture(scope="module")
def compose(docker_engine: None) -> list[str]:
    command = compose_command()
    if command is None:
        pytest.skip("no Compose: apt-get install docker-compose (or the compose plugin)")
    return command


@pytest.fixture(scope="module")
def stack_images(compose: list[str], image: str) -> None:
    docker("tag", image, APP_IMAGE)
    built = subprocess.run(
        [str(ROOT / "infra" / "docker" / "build-standin-image.sh")],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-3000:]


@pytest.fixture
def stack(compose: list[str], stack_images: None) -> Iterator[Stack]:
    up = Stack(compose)
    try:
        up.run("up", "-d", "--no-build", timeout=600)
        yield up
    finally:
        up.run("down", "-v", "--remove-orphans", timeout=180, check=False)
        left = docker("volume", "ls", "-q", "--filter", f"name={up.project}").stdout.split()
        assert not left, f"volumes left behind: {left}"


def aws_cli(stack: Stack, *args: str) -> str:
    """The README's `awsl` alias: the AWS CLI against the stack's LocalStack port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_PAGER="",
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    )
    done = subprocess.run(
        ["aws", "--endpoint-url", f"http://127.0.0.1:{stack.aws_port}", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_compose_up_walk_through(stack: Stack, tmp_path: Path) -> None:
    if shutil.which("aws", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("the AWS CLI is not installed (pip install -e '.[test]' brings it)")
    api = f"http://127.0.0.1:{stack.api_port}"
    # curl http://localhost:8000/readyz
    stack.wait_for(lambda: stack.health("localstack") == "healthy", "healthy localstack")
    stack.wait_for(lambda: stack.health("worker") == "healthy", "healthy worker")

    def ready() -> bool:
        try:
            return httpx.get(f"{api}/readyz", timeout=3).json() == {"status": "ready"}
        except (httpx.HTTPError, ValueError):
            return False

    stack.wait_for(ready, "/readyz 200")

    # Results arrive on the topic: subscribe a queue to it, as a consumer would.
    topic = json.loads(aws_cli(stack, "sns", "list-topics"))["Topics"][0]["TopicArn"]
    inbox = json.loads(aws_cli(stack, "sqs", "create-queue", "--queue-name", "inbox"))["QueueUrl"]
    inbox_arn = json.loads(
        aws_cli(stack, "sqs", "get-queue-attributes", "--queue-url", inbox,
                "--attribute-names", "QueueArn")
    )["Attributes"]["QueueArn"]  # fmt: skip
    aws_cli(stack, "sns", "subscribe", "--topic-arn", topic, "--protocol", "sqs",
            "--notification-endpoint", inbox_arn)  # fmt: skip

    song = synth_song(seed=8181, duration_s=30.0)
    song_file = encode(song, tmp_path / "song", "mp3", tags={"title": "Compose Song"})
    clip_file = encode(excerpt(song, 10.0, 8.0), tmp_path / "clip", "aac_m4a")
    aws_cli(stack, "s3", "cp", str(song_file), "s3://song-detection/songs_to_index/song.mp3")

    def listed() -> list[dict]:
        return httpx.get(f"{api}/songs", timeout=5).json()["items"]

    (indexed,) = stack.wait_for(listed, "indexed song in /songs")
    assert indexed["title"] == "Compose Song"

    aws_cli(stack, "s3", "cp", str(clip_file), "s3://song-detection/songs_to_check/clip.m4a")
    stack.wait_for(
        lambda: "clip.json" in aws_cli(stack, "s3", "ls", "s3://song-detection/songs_to_check/"),
        "clip.json report",
    )
    report = json.loads(
        aws_cli(stack, "s3", "cp", "s3://song-detection/songs_to_check/clip.json", "-")
    )
    (match,) = report["matches"]
    assert match["song"]["id"] == indexed["id"]
    assert abs(match["song_offset_s"] - 10.0) < 0.2

    events: list[str] = []

    def received() -> bool:
        out = aws_cli(stack, "sqs", "receive-message", "--queue-url", inbox,
                      "--max-number-of-messages", "10")  # fmt: skip
        for message in json.loads(out or "{}").get("Messages", []):
            events.append(json.loads(json.loads(message["Body"])["Message"])["event_type"])
        return {"index.result", "identify.result"} <= set(events)

    stack.wait_for(received, "SNS messages")
    # Nothing was given up on.
    dlq = json.loads(aws_cli(stack, "sqs", "get-queue-url", "--queue-name",
                             "song-detection-events-dlq"))["QueueUrl"]  # fmt: skip
    assert not json.loads(aws_cli(stack, "sqs", "receive-message", "--queue-url", dlq) or "{}")

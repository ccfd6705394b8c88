"""The image builds and runs: serve on the embedded store, index, identify, SIGTERM, exit 0;
the worker, wired by the LocalStack init script (here on moto's server), turns uploads into
reports.

Needs a Docker engine. Where none answers, the test starts Debian's `dockerd` itself (as root,
`--iptables=false --bridge=none`: containers use the host network) and stops it afterwards.
No public registry is reachable here, so infra/docker/build-image.sh builds a stand-in for
python:3.11-slim with debootstrap (cached: once built, it is reused) unless BASE_IMAGE names a
base to use. Skipped, with the reason, where no engine can run; SONG_DETECTION_DOCKER_TESTS=0
skips it on purpose.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer

from tests.audio_fixtures import encode, excerpt, synth_song
from tests.deploy.docker_helpers import docker, free_port
from tests.deploy.wiring import ROOT

pytestmark = pytest.mark.docker


def test_runs_as_non_root_without_compilers(image: str) -> None:
    probe = "id -u; for c in gcc cc g++ clang make; do command -v $c || true; done"
    out = docker("run", "--rm", "--entrypoint", "sh", image, "-c", probe).stdout.split()
    assert out == ["10001"], f"root or a compiler in the final image: {out}"


def test_one_image_every_role(image: str) -> None:
    config = docker(
        "image", "inspect", image, "--format", "{{json .Config.Entrypoint}} {{json .Config.Cmd}}"
    )
    assert config.stdout.split() == ['["song-detection"]', '["serve"]']
    migrate = docker("run", "--rm", image, "migrate", check=False)
    assert migrate.returncode == 0, migrate.stderr
    assert "applied" in migrate.stdout
    commands = docker("run", "--rm", image, "--help").stdout
    for command in ("serve", "migrate"):
        assert command in commands


def test_serve_indexes_identifies_and_stops_cleanly_on_sigterm(image: str, tmp_path: Path) -> None:
    song = synth_song(seed=4242, duration_s=30.0)
    song_file = encode(song, tmp_path / "song", "mp3", tags={"title": "Smoke"})
    clip_file = encode(excerpt(song, 11.0, 8.0), tmp_path / "clip", "aac_m4a")
    port = free_port()
    name = f"song-detection-smoke-{uuid.uuid4().hex[:8]}"
    docker(
        "run", "-d", "--name", name, "--network", "host",
        "-e", f"PORT={port}", "-e", "CPU_WORKERS=1",
        image,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=60) as http:
            deadline = time.monotonic() + 90
            while True:
                try:
                    if http.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                state = docker("inspect", "-f", "{{.State.Running}}", name).stdout.strip()
                assert state == "true", docker("logs", name).stderr[-3000:]
                assert time.monotonic() < deadline, "serve never became ready"
                time.sleep(0.5)

            with song_file.open("rb") as f:
                indexed = http.post("/songs", files={"file": ("song.mp3", f, "audio/mpeg")})
            assert indexed.status_code == 201, indexed.text
            song_id = indexed.json()["id"]
            with clip_file.open("rb") as f:
                found = http.post("/identify", files={"file": ("clip.m4a", f, "audio/mp4")})
            assert found.status_code == 200, found.text
            (match,) = found.json()["matches"]
            assert match["song"]["id"] == song_id
            assert abs(match["song_offset_s"] - 11.0) < 0.2

        # The image's HEALTHCHECK runs inside the container; wait for its first verdict.
        deadline = time.monotonic() + 45
        health = ""
        while time.monotonic() < deadline:
            health = docker("inspect", "-f", "{{.State.Health.Status}}", name).stdout.strip()
            if health != "starting":
                break
            time.sleep(1)
        assert health == "healthy"

        stop_cleanly(name)
        logs = docker("logs", name)
        assert "Application shutdown complete" in logs.stdout + logs.stderr
    finally:
        docker("rm", "-f", name, check=False)


def stop_cleanly(name: str) -> None:
    """`docker stop` (SIGTERM) ends the container with exit code 0 well before SIGKILL."""
    started = time.monotonic()
    docker("stop", "--time", "30", name, timeout=60)
    stopped_s = time.monotonic() - started
    exit_code = docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip()
    logs = docker("logs", name)
    assert exit_code == "0", logs.stderr[-3000:]
    assert stopped_s < 25, f"took {stopped_s:.1f} s to stop: SIGKILL territory"


def wait_for(name: str, predicate: Callable[[], Any], what: str, timeout_s: float = 90) -> Any:
    """Poll `predicate` until it is truthy while container `name` keeps running."""
    deadline = time.monotonic() + timeout_s
    while not (result := predicate()):
        logs = docker("logs", name).stderr[-3000:]
        assert docker("inspect", "-f", "{{.State.Running}}", name).stdout.strip() == "true", logs
        assert time.monotonic() < deadline, f"no {what}: {logs}"
        time.sleep(0.5)
    return result


def test_worker_turns_uploads_into_reports(image: str, tmp_path: Path) -> None:
    """The compose/ECS worker role: bucket events in, catalogue and .json reports out."""
    aws_bin = Path(sys.executable).parent / "aws"
    if not aws_bin.exists() and shutil.which("aws") is None:
        pytest.skip("the AWS CLI is not installed (pip install -e '.[test]' brings it)")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    # moto's state is per process: start from none, whatever ran before in this session.
    httpx.post(f"{endpoint}/moto-api/reset", timeout=10).raise_for_status()
    name = f"song-detection-worker-{uuid.uuid4().hex[:8]}"
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(
            PATH=os.pathsep.join([str(aws_bin.parent), env.get("PATH", "")]),
            AWS_ENDPOINT_URL=endpoint,
            AWS_REGION="us-east-1",
            AWS_CONFIG_FILE=os.devnull,
            AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        )
        init = ROOT / "infra" / "localstack" / "ready.d" / "10-song-detection.sh"
        made = subprocess.run([str(init)], env=env, capture_output=True, text=True, timeout=120)
        assert made.returncode == 0, made.stderr
        credentials = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **credentials)
        sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1", **credentials)
        sns = boto3.client("sns", endpoint_url=endpoint, region_name="us-east-1", **credentials)
        queue_url = sqs.get_queue_url(QueueName="song-detection-events")["QueueUrl"]
        (topic,) = [t["TopicArn"] for t in sns.list_topics()["Topics"]]
        health_port = free_port()
        docker(
            "run", "-d", "--name", name, "--network", "host",
            "-e", f"AWS_ENDPOINT_URL={endpoint}", "-e", "AWS_REGION=us-east-1",
            "-e", "AWS_ACCESS_KEY_ID=test", "-e", "AWS_SECRET_ACCESS_KEY=test",
            "-e", "S3_BUCKET=song-detection", "-e", f"SQS_QUEUE_URL={queue_url}",
            "-e", f"SNS_TOPIC_ARN={topic}", "-e", f"WORKER_HEALTH_PORT={health_port}",
            "-e", "SQS_WAIT_S=1", "-e", "CPU_WORKERS=1",
            image, "worker",
        )  # fmt: skip

        song = synth_song(seed=5151, duration_s=30.0)
        song_file = encode(song, tmp_path / "song", "mp3")
        clip_file = encode(excerpt(song, 9.0, 8.0), tmp_path / "clip", "aac_m4a")
        s3.upload_file(str(song_file), "song-detection", "songs_to_index/Smoke Song.mp3")

        def health() -> dict | None:
            try:
                return httpx.get(f"http://127.0.0.1:{health_port}/healthz", timeout=2).json()
            except httpx.HTTPError:
                return None

        wait_for(name, lambda: (h := health()) and h.get("processed", 0) >= 1, "indexing")
        s3.upload_file(str(clip_file), "song-detection", "songs_to_check/clip.m4a")

        def reports() -> list[str]:
            listing = s3.list_objects_v2(Bucket="song-detection", Prefix="songs_to_check/")
            return [o["Key"] for o in listing.get("Contents", []) if o["Key"].endswith(".json")]

        (key,) = wait_for(name, reports, "report")
        report = json.loads(s3.get_object(Bucket="song-detection", Key=key)["Body"].read())
        (match,) = report["matches"]
        assert match["song"]["title"] == "Smoke Song"
        assert abs(match["song_offset_s"] - 9.0) < 0.2
        stop_cleanly(name)
    finally:
        docker("rm", "-f", name, check=False)
        server.stop()

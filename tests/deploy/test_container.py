"""The image builds and runs: serve on the embedded store, index, identify, SIGTERM, exit 0.

Needs a Docker engine. Where none answers, the test starts Debian's `dockerd` itself (as root,
`--iptables=false --bridge=none`: containers use the host network) and stops it afterwards.
No public registry is reachable here, so infra/docker/build-image.sh builds a stand-in for
python:3.11-slim with debootstrap (cached: once built, it is reused) unless BASE_IMAGE names a
base to use. Skipped, with the reason, where no engine can run; SONG_DETECTION_DOCKER_TESTS=0
skips it on purpose.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.audio_fixtures import encode, excerpt, synth_song
from tests.deploy.wiring import ROOT

pytestmark = pytest.mark.docker

IMAGE = "song-detection:smoke-test"
BASE_TAG = "song-detection/python-base:3.11-bookworm"


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=check
    )


def engine_answers() -> bool:
    try:
        return (
            docker("info", "--format", "{{.ServerVersion}}", timeout=20, check=False).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    if os.environ.get("SONG_DETECTION_DOCKER_TESTS", "1") == "0":
        pytest.skip("SONG_DETECTION_DOCKER_TESTS=0")
    if shutil.which("docker") is None:
        pytest.skip("no docker client (apt-get install docker.io)")
    if engine_answers():
        yield
        return
    dockerd = shutil.which("dockerd") or shutil.which("dockerd", path="/usr/sbin:/sbin")
    if dockerd is None or os.geteuid() != 0:
        pytest.skip("no Docker engine answers, and dockerd cannot be started (needs root)")
    log_path = tmp_path_factory.mktemp("dockerd") / "dockerd.log"
    with log_path.open("wb") as log:
        daemon = subprocess.Popen(
            [dockerd, "--iptables=false", "--bridge=none"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while not engine_answers():
            if daemon.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-1500:]
                pytest.skip(f"dockerd could not start here:\n{tail}")
            time.sleep(0.5)
        yield
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()


@pytest.fixture(scope="session")
def image(docker_engine: None) -> str:
    have_base = docker("image", "inspect", BASE_TAG, check=False).returncode == 0
    if not (os.environ.get("BASE_IMAGE") or have_base or shutil.which("debootstrap")):
        pytest.skip("no base image: install debootstrap (stand-in base) or set BASE_IMAGE")
    started = time.monotonic()
    result = subprocess.run(
        [str(ROOT / "infra" / "docker" / "build-image.sh"), IMAGE],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    print(f"image built in {time.monotonic() - started:.0f} s")
    return IMAGE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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

        started = time.monotonic()
        docker("stop", "--time", "30", name, timeout=60)  # SIGTERM, SIGKILL after 30 s
        stopped_s = time.monotonic() - started
        exit_code = docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip()
        logs = docker("logs", name)
        assert exit_code == "0", logs.stderr[-3000:]
        assert stopped_s < 25, f"took {stopped_s:.1f} s to stop: SIGKILL territory"
        assert "Application shutdown complete" in logs.stdout + logs.stderr
    finally:
        docker("rm", "-f", name, check=False)

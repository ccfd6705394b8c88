"""Docker for the deploy tests: the engine (started here when none answers), the image built
from this checkout, and small helpers.

Where no engine answers, the `docker_engine` fixture starts Debian's `dockerd` itself (as root,
`--iptables=false --bridge=none`: containers use the host network) and stops it afterwards.
No public registry is reachable here, so infra/docker/build-image.sh builds a stand-in for
python:3.11-slim with debootstrap (cached: once built, it is reused) unless BASE_IMAGE names a
base to use. Skipped, with the reason, where no engine can run; SONG_DETECTION_DOCKER_TESTS=0
skips them on purpose.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.deploy.wiring import ROOT

#: One tag per checkout, so that checkouts sharing an engine never run each other's code.
IMAGE = f"song-detection:test-{hashlib.sha256(str(ROOT).encode()).hexdigest()[:8]}"
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    """The service image built from this checkout (layers cached by the engine)."""
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

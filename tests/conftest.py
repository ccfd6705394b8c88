"""Shared fixtures: a small catalogue of real encoded songs, and a real HTTP server."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn

from service.api.http_protocol import HTTP_PROTOCOL
from service.hosts import create_app
from service.settings import Settings
from tests.audio_fixtures import SYNTH_RATE_HZ, encode, synth_song

pytest_plugins = ["tests.db_fixtures", "tests.aws_fixtures"]

# Tests must never pick up a developer's .env, credentials or database.
for _var in ("DATABASE_URL", "API_KEY", "ENVIRONMENT", "AWS_PROFILE"):
    os.environ.pop(_var, None)


@dataclass(frozen=True)
class CatalogueSong:
    seed: int
    samples: np.ndarray  # mono float32 at SYNTH_RATE_HZ
    path: Path  # the encoded file that gets indexed
    title: str


@pytest.fixture(scope="session")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> list[CatalogueSong]:
    """Four 40-s songs in the containers users upload most (one with a video track)."""
    folder = tmp_path_factory.mktemp("catalogue")
    formats = ["mp3", "ts_video", "ogg", "aac_m4a"]
    songs = []
    for seed, fmt in enumerate(formats, start=1):
        samples = synth_song(seed, 40.0)
        title = f"Song {seed}"
        path = encode(
            samples,
            folder / f"song{seed}",
            fmt,
            channels=2 if seed % 2 else 1,
            tags={"title": title, "artist": f"Artist {seed}"},
        )
        songs.append(CatalogueSong(seed, samples, path, title))
    return songs


@pytest.fixture(scope="session")
def unknown_song() -> np.ndarray:
    """A song that is never indexed."""
    return synth_song(1000, 20.0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn serving the real app on a free loopback port, in a background thread; entering
    waits until the app's start-up (store, migrations, CPU pool) has settled, unless
    `wait_ready` is false."""

    def __init__(self, settings: Settings, wait_ready: bool = True) -> None:
        self.port = _free_port()
        self.app = create_app(settings)
        self.wait_ready = wait_ready
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            http=HTTP_PROTOCOL,  # as `song-detection serve` runs it
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started or (self.wait_ready and not self._settled()):
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.05)
        return self

    def _settled(self) -> bool:
        startup = getattr(self.app.state, "startup", None)
        return startup is not None and startup.phase != "starting"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def live_server_factory() -> Iterator[type[LiveServer]]:
    yield LiveServer


__all__ = ["SYNTH_RATE_HZ", "CatalogueSong", "LiveServer"]

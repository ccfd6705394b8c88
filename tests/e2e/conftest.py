"""Fixtures of the web page's end-to-end tests: a catalogue and a live stream made from the
repository's real music, a real server on a free port, and Debian's chromium driven by
Playwright (no browser is downloaded: the system's is used or the tests are skipped)."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import sync_playwright

from service.audio.params import DEFAULT_PARAMS
from service.core.index import IndexOptions, index_path
from service.core.streams.segment import process_stream_segment
from service.executor import CpuPool
from service.resources import match_params_of
from service.settings import Settings
from service.store import SongMeta, create_store
from tests.audio_fixtures import SYNTH_RATE_HZ
from tests.conftest import LiveServer
from tests.stream_fixtures import SEGMENT_S, Program, segment_program

MUSIC = Path(__file__).resolve().parents[1] / "data" / "music"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # A synthetic microphone (a beeping tone) for the recording test, granted without a prompt.
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]

#: Applied to every test of the page: only a missing browser skips them (CI installs it).
needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"the web page tests need Debian's chromium at {CHROMIUM} (apt-get install chromium)",
)


def read_music(name: str) -> np.ndarray:
    """A file of tests/data/music as mono float32 at SYNTH_RATE_HZ (what ffmpeg decodes)."""
    cmd = ["ffmpeg", "-v", "error", "-i", str(MUSIC / name), "-f", "f32le", "-ac", "1"]
    cmd += ["-ar", str(SYNTH_RATE_HZ), "pipe:1"]
    raw = subprocess.run(cmd, capture_output=True, check=True)
    return np.frombuffer(raw.stdout, dtype=np.float32)


@dataclass(frozen=True)
class WebWorld:
    server: LiveServer
    folder: Path
    #: A moment before the streams' first segments arrived (their plays lie after it).
    stream_started_at: datetime
    settings: Settings
    #: radio2's next segment, held back for the live view to see it arrive.
    late_segment: Path


async def feed_segments(settings: Settings, name: str, segments: list[Path]) -> None:
    """Add archive segments of stream `name` through the stream pipeline, as the worker does
    for MediaLive's archive: the last as if it had just been uploaded, the others one
    segment length apart before it."""
    store = create_store(settings, DEFAULT_PARAMS.version)
    await store.open()
    pool = CpuPool(1, use_processes=False)
    try:
        params = match_params_of(settings)
        for i, segment in enumerate(segments):
            before_s = SEGMENT_S * (len(segments) - 1 - i)
            await process_stream_segment(
                store,
                pool,
                "bucket",
                f"songs_to_check/streams/{name}/{segment.name}",
                segment,
                params,
                uploaded_at=datetime.now(UTC) - timedelta(seconds=before_s),
                fp_params=DEFAULT_PARAMS,
            )
    finally:
        pool.close()
        await store.close()


async def _prepare(settings: Settings, folder: Path) -> Path:
    """Index Coherence and make two streams of real TS segments: radio1 plays music the
    catalogue does not know, then Coherence, still on air at its last segment; radio2 only
    the unknown music, its last segment held back (returned)."""
    store = create_store(settings, DEFAULT_PARAMS.version)
    await store.open()
    pool = CpuPool(1)
    try:
        await index_path(
            store,
            pool,
            MUSIC / "coherence.ogg",
            IndexOptions(SongMeta("Coherence", "Max McCracken")),
            params=DEFAULT_PARAMS,
        )
    finally:
        pool.close()
        await store.close()
    coherence, unknown = read_music("coherence.ogg"), read_music("armygeddon.ogg")
    rate = SYNTH_RATE_HZ
    radio1 = Program(np.concatenate([unknown[: 18 * rate], coherence]), [])
    radio2 = Program(unknown[: 36 * rate], [])
    await feed_segments(
        settings, "radio1", segment_program(radio1, folder / "radio1", "radio1", 48000)
    )
    segments = segment_program(radio2, folder / "radio2", "radio2", 48000)
    await feed_segments(settings, "radio2", segments[:-1])
    return segments[-1]


@pytest.fixture(scope="module")
def web_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebWorld]:
    folder = tmp_path_factory.mktemp("web")
    settings = Settings(
        database_url=f"sqlite:///{folder / 'web.sqlite3'}", cpu_workers=1, environment="test"
    )
    started_at = datetime.now(UTC).replace(microsecond=0)
    late_segment = asyncio.run(_prepare(settings, folder))
    with LiveServer(settings) as server:
        yield WebWorld(server, folder, started_at, settings, late_segment)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    # Module-scoped: Playwright's sync API keeps an event loop marked running while it is
    # open, which the asyncio tests of other modules must not find.
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tests leave a picture of each page: SCREENSHOT_DIR (the README shows those
    of docs/screenshots), else a temporary folder."""
    configured = os.environ.get("SCREENSHOT_DIR")
    folder = Path(configured) if configured else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class PageErrors:
    """Uncaught script errors and requests that left the service: each is a failure."""

    def __init__(self, page: object, origin: str) -> None:
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(f"script error: {error}"))
        page.on(
            "request",
            lambda request: (
                None
                if request.url.startswith((origin, "blob:", "data:"))
                else self.errors.append(f"request outside the service: {request.url}")
            ),
        )


@pytest.fixture
def page_factory(browser: object) -> Iterator[object]:
    """New pages in fresh contexts (own session storage); checks each for script errors."""
    opened: list[tuple[object, PageErrors]] = []

    def open_page(origin: str, width: int = 1280, height: int = 900, **options: object):
        context = browser.new_context(
            viewport={"width": width, "height": height}, accept_downloads=True, **options
        )
        page = context.new_page()
        page.set_default_timeout(20_000)
        opened.append((context, PageErrors(page, origin)))
        return page

    yield open_page
    for context, errors in opened:
        context.close()
        assert errors.errors == []

"""The airplay report: plays across streams aggregated by song, ISRC, stream and day, in both
stores, through the store, the API (JSON and CSV) and the command line."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from service.audio.hashes import Fingerprints
from service.audio.params import DEFAULT_PARAMS
from service.settings import Settings
from service.store import (
    NewSong,
    NewStream,
    PlayFields,
    PlayReportQuery,
    SongMeta,
    StreamUpdate,
    create_store,
)
from service.store.sqlite.reports import REPORT_PAGE_GROUPS
from tests.conftest import LiveServer

ROOT = Path(__file__).resolve().parents[2]
DAY1 = datetime(2025, 3, 14, 9, 0, tzinfo=UTC)


def _song(title: str, isrc: str | None, seed: int) -> NewSong:
    rng = np.random.default_rng(seed)
    fp = Fingerprints(
        rng.integers(0, 1 << 20, 200).astype(np.int32), np.arange(200, dtype=np.int32)
    )
    return NewSong(SongMeta(title, "Band", None, isrc), 200.0, 6000, f"{seed:064d}", fp)


def _play(song_id: int, start_s: float, end_s: float, status: str = "ended") -> PlayFields:
    return PlayFields(song_id, status, start_s, end_s, 0.0, end_s - start_s, 1.0, 50, 1.0, 5)  # type: ignore[arg-type]


async def _fill(url: str) -> dict[str, int]:
    settings = Settings(database_url=url, environment="test")
    store = create_store(settings, DEFAULT_PARAMS.version)
    await store.open()
    try:
        ids = {}
        for seed, (title, isrc) in enumerate(
            [("A", "ISRC-X"), ("B", "ISRC-X"), ("C", None)], start=1
        ):
            song, _ = await store.add_song(_song(title, isrc, seed))
            ids[title] = song.id
        origins = {"one": DAY1, "two": datetime(2025, 3, 14, 12, 0, tzinfo=UTC)}
        plays = {
            "one": [
                _play(ids["A"], 0, 180),
                _play(ids["B"], 200, 400),
                _play(ids["C"], 500, 600, "retracted"),
                _play(ids["A"], 86400, 86580),  # the next day
            ],
            "two": [_play(ids["A"], 0, 120), _play(ids["C"], 300, 400)],
        }
        for name, origin in origins.items():
            stream = await store.ensure_stream(NewStream(name, 0.0, origin, 0.0, 0, f"{name}/0"))
            await store.apply_stream_update(StreamUpdate(stream.id, new_plays=plays[name]))
        return ids
    finally:
        await store.close()


@pytest.fixture
async def filled(store_url: str) -> tuple[str, dict[str, int]]:
    return store_url, await _fill(store_url)


async def _rows(url: str, query: PlayReportQuery) -> dict[str, tuple]:
    store = create_store(Settings(database_url=url, environment="test"), DEFAULT_PARAMS.version)
    await store.open()
    try:
        return {
            r.key: (r.plays, r.airtime_s, r.songs, r.streams, r.first_aired, r.last_aired)
            async for r in store.play_report(query)
        }
    finally:
        await store.close()


async def test_plays_grouped_every_way(filled) -> None:
    url, ids = filled
    by_song = await _rows(url, PlayReportQuery("song"))
    a, b, c = str(ids["A"]), str(ids["B"]), str(ids["C"])
    assert list(by_song) == sorted(by_song, key=int)
    assert by_song[a][:4] == (3, 480.0, 1, 2)
    assert by_song[a][4] == DAY1
    assert by_song[a][5] == datetime(2025, 3, 15, 9, 3, tzinfo=UTC)
    assert by_song[b][:4] == (1, 200.0, 1, 1)
    assert by_song[c][:4] == (1, 100.0, 1, 1)  # the retracted play is not counted

    by_isrc = await _rows(url, PlayReportQuery("isrc"))
    assert by_isrc["ISRC-X"][:3] == (4, 680.0, 2)
    assert by_isrc[""][:3] == (1, 100.0, 1)

    by_stream = await _rows(url, PlayReportQuery("stream"))
    assert {k: v[:2] for k, v in by_stream.items()} == {"one": (3, 560.0), "two": (2, 220.0)}

    by_day = await _rows(url, PlayReportQuery("day"))
    assert {k: v[0] for k, v in by_day.items()} == {"2025-03-14": 4, "2025-03-15": 1}

    # A range clips airtime; a stream filter keeps one stream.
    minute = await _rows(
        url,
        PlayReportQuery(
            "song",
            datetime(2025, 3, 14, 9, 1, tzinfo=UTC),
            datetime(2025, 3, 14, 9, 2, tzinfo=UTC),
        ),
    )
    assert {k: v[:2] for k, v in minute.items()} == {a: (1, 60.0)}
    two = await _rows(url, PlayReportQuery("song", stream="two"))
    assert {k: v[0] for k, v in two.items()} == {a: 1, c: 1}
    assert await _rows(url, PlayReportQuery("song", stream="nowhere")) == {}


async def test_the_api_and_the_command_line_report(filled) -> None:
    url, _ = filled
    settings = Settings(database_url=url, cpu_workers=1, environment="test")
    with LiveServer(settings) as server, server.client() as client:
        r = client.get("/reports/plays", params={"group_by": "isrc"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["group_by"] == "isrc"
        items = {i["key"]: i for i in body["items"]}
        assert items["ISRC-X"]["plays"] == 4 and items["ISRC-X"]["songs"] == 2
        assert items["ISRC-X"]["first_aired"] == "2025-03-14T09:00:00Z"
        r = client.get(
            "/reports/plays",
            params={"group_by": "day", "from": "2025-03-14T00:00:00Z"},
            headers={"Accept": "text/csv"},
        )
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(r.text)))
        assert [(row["key"], row["plays"]) for row in rows] == [
            ("2025-03-14", "4"),
            ("2025-03-15", "1"),
        ]
        bad = client.get("/reports/plays", params={"from": "2025-03-15", "to": "2025-03-14"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_request"
        unknown = client.get("/reports/plays", params={"group_by": "label"})
        assert unknown.status_code == 422
        assert unknown.json()["error"]["code"] == "validation_error"

    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "API_"))}
    env["DATABASE_URL"] = url
    cli = subprocess.run(
        [sys.executable, "-m", "service.cli", "report", "--group-by", "stream", "--format", "json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stderr
    streams = {i["key"]: i["plays"] for i in json.loads(cli.stdout)["items"]}
    assert streams == {"one": 3, "two": 2}


async def test_a_report_of_more_groups_than_a_page_comes_whole_and_in_order(store_url) -> None:
    """1,100 days of plays: more groups than a SQLite round trip reads (REPORT_PAGE_GROUPS),
    each exactly once, in key order, as PostgreSQL's cursor gives them."""
    days = REPORT_PAGE_GROUPS + 100
    store = create_store(
        Settings(database_url=store_url, environment="test"), DEFAULT_PARAMS.version
    )
    await store.open()
    try:
        song, _ = await store.add_song(_song("A", "ISRC-X", 1))
        stream = await store.ensure_stream(NewStream("daily", 0.0, DAY1, 0.0, 0, "daily/0"))
        plays = [_play(song.id, 86400.0 * k, 86400.0 * k + 60.0 + k % 7) for k in range(days)]
        await store.apply_stream_update(StreamUpdate(stream.id, new_plays=plays))
        rows = [r async for r in store.play_report(PlayReportQuery("day"))]
        expected = [(DAY1 + timedelta(days=k)).strftime("%Y-%m-%d") for k in range(days)]
        assert [r.key for r in rows] == expected
        assert [(r.plays, r.airtime_s) for r in rows] == [(1, 60.0 + k % 7) for k in range(days)]
        assert rows[-1].last_aired == DAY1 + timedelta(days=days - 1, seconds=60 + (days - 1) % 7)
        # A report left unfinished ends cleanly, and the next one is whole again.
        partial = store.play_report(PlayReportQuery("day"))
        assert (await anext(partial)).key == expected[0]
        await partial.aclose()
        by_song = [r async for r in store.play_report(PlayReportQuery("song"))]
        assert [(r.key, r.plays) for r in by_song] == [(str(song.id), days)]
    finally:
        await store.close()

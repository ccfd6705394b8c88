"""Live streams end to end: MediaLive-like TS segments (H.264 + AAC) uploaded to moto's S3,
announced on SQS, processed by the real worker loop into the airplay log, play events on SNS,
the log read back over HTTP. In order, shuffled with duplicates, and with a segment missing.

The program: 30 s of song A, 8 s of unknown music, 30 s of song B, 8 s of unknown music,
cut into 12-s segments. Every wait has a timeout.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from service.audio.decode import decode_audio
from service.audio.params import DEFAULT_PARAMS
from service.aws.clients import AwsClients
from service.core.index import IndexOptions, index_path
from service.executor import CpuPool
from service.resources import Resources, match_params_of
from service.settings import Settings
from service.store import Play, SongMeta, Store, create_store
from service.worker.runtime import running_worker
from tests.audio_fixtures import encode, synth_song
from tests.aws_fixtures import AwsWorld, SnsMessage, s3_event
from tests.conftest import LiveServer
from tests.stream_fixtures import Piece, build_program, segment_program

SONG_A, SONG_B = 21, 22
PROGRAM = [
    Piece(SONG_A, 5.0, 30.0),
    Piece(None, 0.0, 8.0),
    Piece(SONG_B, 3.0, 30.0),
    Piece(None, 0.0, 8.0),
]
#: (song seed, program start, program end, song start) of the plays the log must hold.
EXPECTED = [(SONG_A, 0.0, 30.0, 5.0), (SONG_B, 38.0, 68.0, 3.0)]
STREAM_SETTINGS = {"stream_play_end_timeout_s": 5.0, "stream_sweep_interval_s": 0.3}


@dataclass(frozen=True)
class StreamMedia:
    songs: dict[int, Path]  # seed -> encoded full song
    segments: dict[int, list[Path]]  # sample rate -> segments in order
    #: Stream time of program time 0 per sample rate (first audio PTS; ffmpeg starts at 1.4 s).
    t0: dict[int, float]


@pytest.fixture(scope="module")
def stream_media(tmp_path_factory: pytest.TempPathFactory) -> StreamMedia:
    folder = tmp_path_factory.mktemp("stream_media")
    songs = {s: encode(synth_song(s, 40.0), folder / f"song{s}", "mp3") for s in (SONG_A, SONG_B)}
    program = build_program(PROGRAM, 40.0)
    segments, t0 = {}, {}
    for rate in (44100, 48000):
        segments[rate] = segment_program(program, folder / str(rate), "radio1", rate)
        pts = decode_audio(segments[rate][0], 8000).start_pts_s
        assert pts is not None
        t0[rate] = pts + 1024 / rate  # the first AAC frame is encoder priming
    return StreamMedia(songs, segments, t0)


@asynccontextmanager
async def stream_worker(settings: Settings) -> AsyncIterator[Store]:
    """The real worker (poller, handler, stream sweeper) on this loop; yields its store."""
    store = create_store(settings, DEFAULT_PARAMS.version)
    await store.open()
    pool = CpuPool(1, use_processes=False)
    clients = await AwsClients.open(settings)
    resources = Resources(store, pool, match_params_of(settings), DEFAULT_PARAMS, clients)
    try:
        async with running_worker(settings, resources, retry_backoff_s=0.5):
            yield store
    finally:
        await clients.close()
        pool.close()
        await store.close()


async def index_songs(store: Store, media: StreamMedia) -> dict[int, int]:
    pool = CpuPool(1, use_processes=False)
    try:
        ids = {}
        for seed, path in media.songs.items():
            options = IndexOptions(SongMeta(f"Song {seed}", "Band"))
            indexed = await index_path(store, pool, path, options, params=DEFAULT_PARAMS)
            ids[seed] = indexed.song.id
        return ids
    finally:
        pool.close()


def key_of(segment: Path) -> str:
    return f"songs_to_check/streams/{segment.name}"


async def settled(aws: AwsWorld) -> None:
    await aws.until(lambda: aws.queue_depth(aws.queue_url) == 0, 60)


async def plays_of(store: Store) -> list[Play]:
    stream = await store.get_stream("radio1")
    assert stream is not None
    return (await store.list_plays(stream.id, from_s=None, to_s=None, limit=100, offset=0)).items


async def all_ended(aws: AwsWorld, store: Store) -> list[Play]:
    async def check() -> list[Play] | None:
        plays = await plays_of(store)
        return plays if plays and all(p.status == "ended" for p in plays) else None

    deadline = asyncio.get_running_loop().time() + 30
    while (plays := await check()) is None:
        assert asyncio.get_running_loop().time() < deadline, "plays never ended"
        await asyncio.sleep(0.2)
    return plays


def assert_log(plays: list[Play], ids: dict[int, int], t0: float) -> None:
    assert [p.song_id for p in plays] == [ids[s] for s, *_ in EXPECTED]
    for play, (_, start, end, song_start) in zip(plays, EXPECTED, strict=True):
        assert play.start_s - t0 == pytest.approx(start, abs=1.0)
        assert play.end_s - t0 == pytest.approx(end, abs=1.5)
        assert play.song_start_s == pytest.approx(song_start, abs=0.5)
        assert play.song_end_s - play.song_start_s == pytest.approx(
            play.end_s - play.start_s, abs=0.1
        )
        assert play.confidence >= 0.99 and play.status == "ended"


def event_sequence(messages: list[SnsMessage]) -> list[tuple[str, int]]:
    """(event type, song id) in publication order (moto's inbox keeps the order)."""
    for m in messages:
        assert m.attributes == {"event_type": m.message["event_type"], "stream": "radio1"}
    ordered = sorted(messages, key=lambda m: m.message["event_id"])
    return [(m.message["event_type"], m.message["play"]["song"]["id"]) for m in ordered]


# --- in order, then read over HTTP --------------------------------------------------------------


async def deliver_in_order(
    aws: AwsWorld, settings: Settings, stream_media: StreamMedia, segments: list[Path], t0: float
) -> tuple[list, list, dict]:
    """Index the songs, upload `segments` one by one as a channel would, wait until every play
    has ended; check the log against the program: (plays, the 4 SNS messages, song ids)."""
    async with stream_worker(settings) as store:
        ids = await index_songs(store, stream_media)
        for segment in segments:
            aws.upload(key_of(segment), segment)
            await settled(aws)
        plays = await all_ended(aws, store)
        messages = await aws.sns_messages(4)
    assert_log(plays, ids, t0)
    return plays, messages, ids


def two_plays_announced_once(messages: list, ids: dict) -> bool:
    """Song A started and ended, then song B: each event once, in that order."""
    a, b = ids[SONG_A], ids[SONG_B]
    return event_sequence(messages) == [
        ("play.started", a),
        ("play.ended", a),
        ("play.started", b),
        ("play.ended", b),
    ]


@pytest.mark.parametrize(
    ("store_url", "rate"),
    [("postgres", 44100), ("sqlite", 48000)],
    ids=["pg-44k", "sqlite-48k"],
    indirect=["store_url"],
)
async def test_in_order_segments_make_the_log_and_its_events(
    aws: AwsWorld, store_url: str, stream_media: StreamMedia, rate: int
) -> None:
    url = store_url
    settings = aws.settings(url, **STREAM_SETTINGS)
    aws.notify_queue_on_upload()
    t0 = stream_media.t0[rate]
    plays, messages, ids = await deliver_in_order(
        aws, settings, stream_media, stream_media.segments[rate], t0
    )
    a, b = ids[SONG_A], ids[SONG_B]
    # A ends as soon as B is established past it; B ends when the stream goes quiet.
    assert two_plays_announced_once(messages, ids)
    started = next(m.message for m in messages if m.message["event_type"] == "play.started")
    assert started["stream"] == "radio1"
    assert started["play"]["song"] == {
        "id": a, "title": f"Song {SONG_A}", "artist": "Band", "isrc": None, "external_id": None
    }  # fmt: skip
    assert started["play"]["status"] == "playing"
    ended_b = [m.message["play"] for m in messages if m.message["event_type"] == "play.ended"][-1]
    assert ended_b["status"] == "ended"
    assert ended_b["stream_end_s"] == pytest.approx(plays[1].end_s, abs=0.01)

    with LiveServer(aws.settings(url, sqs_queue_url=None)) as server, server.client() as http:
        streams = http.get("/streams").json()
        assert [s["name"] for s in streams] == ["radio1"]
        assert streams[0]["current_play"] is None  # both plays ended
        last = stream_media.segments[rate][-1]
        assert streams[0]["last_segment"]["key"] == key_of(last)
        assert streams[0]["last_segment"]["sequence"] == len(stream_media.segments[rate])

        log = http.get("/streams/radio1/plays").json()
        assert log["total"] == 2 and [p["song"]["id"] for p in log["items"]] == [a, b]
        first = log["items"][0]
        assert first["stream_start_s"] == pytest.approx(plays[0].start_s, abs=0.001)
        # Announced; unknown music between the songs, so no handover overlap.
        assert first["announced"] is True
        assert first["overlap_in_s"] == first["overlap_out_s"] == 0.0
        assert first["duration_s"] == pytest.approx(first["stream_end_s"] - first["stream_start_s"])
        assert first["end_at"] > first["start_at"]
        # The stream's audio ends on the wall clock the plays are placed on.
        segment = streams[0]["last_segment"]
        known_s = datetime.fromisoformat(segment["end_at"]) - datetime.fromisoformat(
            first["end_at"]
        )
        assert known_s.total_seconds() == pytest.approx(
            segment["stream_end_s"] - first["stream_end_s"], abs=0.002
        )

        assert http.get(f"/streams/radio1/plays/{first['id']}").json() == first
        assert http.get("/streams/radio1/plays/999999").status_code == 404
        assert http.get("/streams/nope/plays").json()["error"]["code"] == "not_found"

        page = http.get("/streams/radio1/plays", params={"limit": 1, "offset": 1}).json()
        assert page["total"] == 2 and [p["id"] for p in page["items"]] == [log["items"][1]["id"]]
        # Wall-clock range: only the second play ends after the first one's end.
        later = http.get("/streams/radio1/plays", params={"from": first["end_at"]}).json()
        assert [p["id"] for p in later["items"]] == [log["items"][1]["id"]]
        bad = http.get(
            "/streams/radio1/plays", params={"from": first["end_at"], "to": first["start_at"]}
        )
        assert bad.status_code == 400

        as_csv = http.get("/streams/radio1/plays", params={"format": "csv"})
        by_accept = http.get("/streams/radio1/plays", headers={"Accept": "text/csv"})
        assert as_csv.headers["content-type"].startswith("text/csv")
        assert as_csv.text == by_accept.text and as_csv.headers["x-total-count"] == "2"
        rows = list(csv.DictReader(io.StringIO(as_csv.text)))
        assert [int(r["song_id"]) for r in rows] == [a, b]
        assert rows[0]["title"] == f"Song {SONG_A}" and rows[0]["status"] == "ended"
        assert float(rows[1]["stream_start_s"]) == pytest.approx(plays[1].start_s, abs=0.001)


# --- out of order, twice, concurrently ---------------------------------------------------------


@pytest.mark.parametrize("store_url", ["postgres", "sqlite"], indirect=True)
async def test_shuffled_and_duplicated_segments_give_the_same_log(
    aws: AwsWorld, store_url: str, stream_media: StreamMedia
) -> None:
    rate = 48000
    settings = aws.settings(store_url, **STREAM_SETTINGS)
    aws.notify_queue_on_upload()
    segments = list(stream_media.segments[rate])
    random.Random(3).shuffle(segments)
    async with stream_worker(settings) as store:
        ids = await index_songs(store, stream_media)
        etags = {s: aws.upload(key_of(s), s) for s in segments}  # two workers take them
        for s in segments[:3]:
            aws.send(s3_event(aws.bucket, key_of(s), etags[s]))  # the same event again
        aws.upload(key_of(segments[0]), segments[0])  # and a re-upload: a new version
        await settled(aws)
        plays = await all_ended(aws, store)
        messages = await aws.sns_messages(4, quiet_s=2.0)
    assert_log(plays, ids, stream_media.t0[rate])
    by_play: dict[int, list[str]] = {}
    for m in sorted(messages, key=lambda m: m.message["event_id"]):
        by_play.setdefault(m.message["play"]["id"], []).append(m.message["event_type"])
    # Every play of the final log started once, ended once, in that order; corrections in
    # between are play.updated. Pieces the reordering made were never announced: nothing
    # announced is retracted.
    for play in plays:
        types = by_play.pop(play.id)
        assert types[0] == "play.started" and types.count("play.started") == 1
        assert types.count("play.ended") == 1
        assert set(types[1:]) <= {"play.updated", "play.ended"}
    assert by_play == {}
    assert not any(m.message["play"]["status"] == "retracted" for m in messages)


async def test_a_missing_segment_does_not_split_a_play(
    aws: AwsWorld, pg_url: str, stream_media: StreamMedia
) -> None:
    rate = 44100
    settings = aws.settings(pg_url, **STREAM_SETTINGS)
    aws.notify_queue_on_upload()
    segments = list(stream_media.segments[rate])
    del segments[1]  # 12 s in the middle of song A never arrive
    _, messages, ids = await deliver_in_order(
        aws, settings, stream_media, segments, stream_media.t0[rate]
    )
    assert two_plays_announced_once(messages, ids)


async def test_a_damaged_segment_keeps_its_clock_and_the_report_says_where(
    aws: AwsWorld, pg_url: str, stream_media: StreamMedia, tmp_path: Path
) -> None:
    import asyncpg

    from tests.unit.test_decode_damage import damage

    rate = 44100
    settings = aws.settings(pg_url, **STREAM_SETTINGS)
    aws.notify_queue_on_upload()
    segments = list(stream_media.segments[rate])
    hurt = tmp_path / segments[1].name  # 12-24 s: inside song A
    hurt.write_bytes(damage(segments[1].read_bytes(), "ts_video", 0.4, 0.6))
    segments[1] = hurt
    _, messages, ids = await deliver_in_order(
        aws, settings, stream_media, segments, stream_media.t0[rate]
    )
    assert two_plays_announced_once(messages, ids)
    conn = await asyncpg.connect(pg_url)
    try:
        report = json.loads(
            await conn.fetchval(
                "SELECT result_json FROM processed_objects WHERE key = $1", key_of(hurt)
            )
        )
    finally:
        await conn.close()
    assert report["event_type"] == "stream.segment"
    start, end = report["stream_start_s"], report["stream_start_s"] + report["duration_s"]
    assert report["duration_s"] == pytest.approx(12.0, abs=0.1)  # nothing lost from its clock
    (span,) = report["damaged_spans"]
    assert start < span["start_s"] < span["end_s"] < end
    assert span["end_s"] - span["start_s"] > 1.0


async def test_bad_stream_keys_are_reported_not_retried(
    aws: AwsWorld, sqlite_url: str, stream_media: StreamMedia
) -> None:
    settings = aws.settings(sqlite_url, **STREAM_SETTINGS)
    aws.notify_queue_on_upload()
    segment = stream_media.segments[48000][0]
    async with stream_worker(settings) as store:
        aws.upload("songs_to_check/streams/radio1/no-sequence.ts", segment)
        messages = await aws.sns_messages(1)
        await settled(aws)
        assert await store.get_stream("radio1") is None
    (error,) = messages
    assert error.message["event_type"] == "stream.error"
    assert error.message["error"]["code"] == "bad_stream_key"
    assert "sequence number" in error.message["error"]["message"]

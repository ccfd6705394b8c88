"""The SQS worker end to end: moto over real HTTP, real encoded audio, real databases.

Most tests run the real poller on the test's event loop against moto's server; the SIGTERM
test runs `python -m service.cli worker` as ECS would. Every wait has a timeout.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import aioboto3
import httpx
import numpy as np
import pytest

from service.audio.decode import decode_audio
from service.audio.params import DEFAULT_PARAMS
from service.aws.clients import AwsClients
from service.aws.events import parse_message
from service.executor import CpuPool
from service.objects import ObjectCreated, PoisonMessage
from service.resources import Resources, match_params_of
from service.schemas import MatchOut, SongOut
from service.settings import Settings
from service.store import Store, create_store
from service.store.postgres import PostgresStore
from service.worker.handlers import Action, route_for
from service.worker.poller import Outcome, ReceivedMessage, SqsPoller
from service.worker.runtime import running_worker
from tests.audio_fixtures import encode, excerpt, synth_song
from tests.aws_fixtures import (
    MAX_RECEIVE_COUNT,
    REGION,
    AwsWorld,
    eventbridge_event,
    free_port,
    s3_event,
    sns_envelope,
)
from tests.conftest import LiveServer
from tests.fuzz_media import malformed_media

ROOT = Path(__file__).resolve().parents[2]

#: Short backoff so that retried messages come back within a test.
FAST_RETRY = {"retry_backoff_s": 0.5, "retry_backoff_max_s": 1.0}


@dataclass(frozen=True)
class Media:
    song_a: Path  # tags: "Tag Title A" / "Tag Artist A"
    song_b: Path  # tags: "Tag Title B"
    clip_a: Path  # 8 s of song A, AAC in M4A
    clip_b: Path  # 8 s of song B, MP3
    unknown: Path  # never indexed
    broken: Path  # an MP3 name on bytes that are no audio


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Media:
    folder = tmp_path_factory.mktemp("worker_media")
    a, b = synth_song(301, 24.0), synth_song(302, 24.0)
    broken = folder / "broken.mp3"
    broken.write_bytes(os.urandom(20_000))
    return Media(
        song_a=encode(a, folder / "a", "mp3", tags={"title": "Tag Title A", "artist": "Tag A"}),
        song_b=encode(b, folder / "b", "ogg", tags={"title": "Tag Title B"}),
        clip_a=encode(excerpt(a, 9.0, 8.0), folder / "clip_a", "aac_m4a"),
        clip_b=encode(excerpt(b, 3.0, 8.0), folder / "clip_b", "mp3"),
        unknown=encode(synth_song(399, 8.0), folder / "unknown", "mp3"),
        broken=broken,
    )


@dataclass
class RunningWorker:
    store: Store
    poller: SqsPoller


@asynccontextmanager
async def worker(
    settings: Settings, store: Store | None = None, **poller_options: Any
) -> AsyncIterator[RunningWorker]:
    """The real worker (handler + poller + aioboto3 clients) on this event loop; CPU work in
    a thread pool to spare the process spawn."""
    own_store = store is None
    if store is None:
        store = create_store(settings, DEFAULT_PARAMS.version)
        await store.open()
    pool = CpuPool(1, use_processes=False)
    clients = await AwsClients.open(settings)
    resources = Resources(store, pool, match_params_of(settings), DEFAULT_PARAMS, clients)
    try:
        async with running_worker(
            settings, resources, **{**FAST_RETRY, **poller_options}
        ) as poller:
            yield RunningWorker(store, poller)
    finally:
        await clients.close()
        pool.close()
        if own_store:
            await store.close()


async def settled(aws: AwsWorld, timeout_s: float = 20.0) -> None:
    """Both queues of the worker are empty: everything was processed and deleted."""
    await aws.until(lambda: aws.queue_depth(aws.queue_url) == 0, timeout_s)


# --- message parsing and routing (pure) ------------------------------------------------------


def test_s3_notification_keys_are_url_decoded():
    key = "songs_to_check/live set/Motörhead + friends (1).mp3"
    parsed = parse_message(json.dumps(s3_event("b", key, "abc")))
    assert parsed.objects == [
        ObjectCreated("b", key, etag="abc", sequencer="0065F3A1B2C3D4E5F6", size_bytes=1000)
    ]
    # S3 encodes a space as "+" and a literal "+" as "%2B": decoding once restores both.
    encoded = s3_event("b", key, "x")["Records"][0]["s3"]["object"]["key"]
    assert encoded == "songs_to_check/live+set/Mot%C3%B6rhead+%2B+friends+%281%29.mp3"


@pytest.mark.parametrize(
    ("body", "key"),
    [
        (eventbridge_event("b", "songs_to_check/ça va.mp3", "e1"), "songs_to_check/ça va.mp3"),
        (sns_envelope(s3_event("b", "songs_to_index/x y.ogg", "e2")), "songs_to_index/x y.ogg"),
        (sns_envelope(eventbridge_event("b", "songs_to_check/z.ts", "e3")), "songs_to_check/z.ts"),
    ],
)
def test_eventbridge_and_sns_wrapped_shapes(body, key):
    (obj,) = parse_message(json.dumps(body)).objects
    assert (obj.bucket, obj.key) == ("b", key)
    assert obj.version_token is not None and obj.version_token.startswith("s:")


def test_events_that_are_not_uploads_are_ignored():
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"}
    removed = s3_event("b", "songs_to_check/a.mp3", "e")
    removed["Records"][0]["eventName"] = "ObjectRemoved:Delete"
    deleted = eventbridge_event("b", "songs_to_check/a.mp3", "e") | {
        "detail-type": "Object Deleted"
    }
    for body in (test_event, sns_envelope(test_event), removed, deleted):
        parsed = parse_message(json.dumps(body))
        assert parsed.objects == [] and len(parsed.ignored) == 1


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[1, 2]",
        '{"hello": "world"}',
        '{"Records": [{"eventName": "ObjectCreated:Put"}]}',
        '{"Type": "Notification", "Message": "not json either"}',
        json.dumps(sns_envelope(sns_envelope({"Event": "s3:TestEvent"}))),
    ],
)
def test_unknown_bodies_are_poison(body):
    with pytest.raises(PoisonMessage):
        parse_message(body)


def test_version_token_prefers_version_then_sequencer_then_etag():
    assert ObjectCreated("b", "k", "e", "v1", "s1").version_token == "v:v1"
    assert ObjectCreated("b", "k", "e", "null", "s1").version_token == "s:s1"
    assert ObjectCreated("b", "k", "e").version_token == "e:e"
    assert ObjectCreated("b", "k").version_token is None


@pytest.mark.parametrize(
    ("key", "action"),
    [
        ("songs_to_index/a/b.mp3", Action.INDEX),
        ("SONGS_TO_INDEX/B.FLAC", Action.INDEX),
        ("songs_to_check/streams/radio1/0001.ts", Action.STREAM),
        ("Songs_To_Check/Streams/x.aac", Action.STREAM),
        ("songs_to_check/a/b/clip.m4a", Action.IDENTIFY),
        ("songs_to_check/streams.mp3", Action.IDENTIFY),
        ("songs_to_check/a/b/clip.json", None),
        ("songs_to_check/notes.txt", None),
        ("songs_to_check/no_suffix", None),
        ("elsewhere/clip.mp3", None),
        ("songs_to_indexx/clip.mp3", None),
    ],
)
def test_routing_by_prefix_and_suffix(key, action):
    assert route_for(key).action is action


# --- the whole flow -------------------------------------------------------------------------


async def test_uploads_are_indexed_checked_reported_and_published(aws, store_url, media):
    aws.notify_queue_on_upload()
    async with worker(aws.settings(store_url)) as running:
        aws.upload(
            "songs_to_index/label/a.mp3",
            media.song_a,
            metadata={"title": "Meta Title A", "artist": "Meta Artist A"},
        )
        aws.upload("Songs_To_Index/label/b.ogg", media.song_b)
        indexed = await aws.sns_messages(2)
        assert sorted(m.attributes["event_type"] for m in indexed) == ["index.result"] * 2
        songs = (await running.store.list_songs(10, 0)).items
        # x-amz-meta-* first, then the file's tags (B has no artist tag, and no metadata).
        assert {(s.title, s.artist) for s in songs} == {
            ("Meta Title A", "Meta Artist A"),
            ("Tag Title B", None),
        }
        by_title = {s.title: s for s in songs}

        clip_key = "Songs_To_Check/a/b/clip one ça+ü.m4a"
        etag = aws.upload(clip_key, media.clip_a)
        aws.upload("songs_to_check/unknown.mp3", media.unknown)
        aws.upload("songs_to_check/notes.txt", media.unknown)  # not audio: skipped
        aws.upload("elsewhere/clip.mp3", media.clip_a)  # unknown prefix: skipped
        checked = await aws.sns_messages(2)
        await settled(aws)

    report = aws.object_json("Songs_To_Check/a/b/clip one ça+ü.json")
    assert report is not None
    assert report["event_type"] == "identify.result" and report["match"] is True
    assert report["source"] == {
        "bucket": aws.bucket,
        "key": clip_key,
        "etag": etag,
        "version_id": None,
        "size_bytes": media.clip_a.stat().st_size,
    }
    assert report["duration_s"] == pytest.approx(8.0, abs=0.1)
    assert report["processing_ms"] >= report["elapsed_ms"] > 0
    best = report["matches"][0]
    # The same match fields as POST /identify.
    assert set(best) == set(MatchOut.model_fields)
    assert set(best["song"]) == set(SongOut.model_fields)
    assert best["song"]["id"] == by_title["Meta Title A"].id
    assert best["song_offset_s"] == pytest.approx(9.0, abs=0.2)
    assert 0 <= best["query_start_s"] < best["query_end_s"] <= 8.1

    unknown = aws.object_json("songs_to_check/unknown.json")
    assert unknown["match"] is False and unknown["matches"] == []
    # Nothing for the skipped objects, and the reports' own upload events were skipped too.
    assert aws.keys() == sorted(
        [
            "Songs_To_Check/a/b/clip one ça+ü.json",
            "Songs_To_Check/a/b/clip one ça+ü.m4a",
            "Songs_To_Index/label/b.ogg",
            "elsewhere/clip.mp3",
            "songs_to_check/notes.txt",
            "songs_to_check/unknown.json",
            "songs_to_check/unknown.mp3",
            "songs_to_index/label/a.mp3",
        ]
    )

    by_key = {m.message["key"]: m for m in checked}
    assert set(by_key) == {clip_key, "songs_to_check/unknown.mp3"}
    found = by_key[clip_key]
    assert found.attributes == {"event_type": "identify.result", "match": "true"}
    assert found.message["report_key"] == "Songs_To_Check/a/b/clip one ça+ü.json"
    assert found.message["matches"][0]["title"] == "Meta Title A"
    assert by_key["songs_to_check/unknown.mp3"].attributes["match"] == "false"
    assert aws.queue_depth(aws.dlq_url) == 0


async def test_an_indexed_upload_keeps_its_s3_source_and_a_copy_is_reported_as_a_duplicate(
    aws, store_url, media, tmp_path
):
    """reindex rebuilds worker-indexed songs from their S3 objects; a re-encoded copy of a
    stored song is not added again, and its message names the song it copies."""
    copy = tmp_path / "copy.ogg"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(media.song_a), "-c:a", "libvorbis", str(copy)],
        check=True,
    )
    aws.notify_queue_on_upload()
    async with worker(aws.settings(store_url)) as running:
        aws.upload("songs_to_index/label/a.mp3", media.song_a)
        (first,) = await aws.sns_messages(1)
        aws.upload("songs_to_index/label/a-copy.ogg", copy)
        (second,) = await aws.sns_messages(1)
        songs = (await running.store.list_songs(10, 0)).items
    assert [s.source for s in songs] == [f"s3://{aws.bucket}/songs_to_index/label/a.mp3"]
    assert first.message["song"]["created"] is True
    assert second.message["song"]["created"] is False
    assert second.message["song"]["duplicate_of"] == songs[0].id


# --- idempotency ----------------------------------------------------------------------------


async def test_ledger_records_once_and_hands_over_lapsed_claims(store_url):
    store = create_store(Settings(database_url=store_url), DEFAULT_PARAMS.version)
    await store.open()
    try:
        args = ("bucket", "songs_to_check/ü.mp3", "e:abc")
        assert await store.get_processed(*args) is None
        row, inserted = await store.record_processed(*args, "identify", '{"n": 1}')
        assert inserted and row.published_at is None and json.loads(row.result_json) == {"n": 1}
        again, inserted = await store.record_processed(*args, "identify", '{"n": 2}')
        assert not inserted and json.loads(again.result_json) == {"n": 1}
        # The first recorder holds a live claim; once it lapses, one other worker takes over.
        assert not await store.claim_publication(*args, lease_s=60)
        await asyncio.sleep(0.05)
        assert await store.claim_publication(*args, lease_s=0.01)
        assert not await store.claim_publication(*args, lease_s=60)
        await store.mark_published(*args)
        assert (await store.get_processed(*args)).published_at is not None
        await asyncio.sleep(0.05)
        assert not await store.claim_publication(*args, lease_s=0.01)
    finally:
        await store.close()


async def test_redelivered_messages_change_nothing(aws, sqlite_url, media):
    """SQS delivers at least once: the same event twice at once, then again later, yields
    one song, one report and one SNS message per object."""
    index_key, check_key = "songs_to_index/a.mp3", "songs_to_check/clip a.m4a"
    index_event = s3_event(aws.bucket, index_key, aws.upload(index_key, media.song_a))
    check_event = s3_event(aws.bucket, check_key, aws.upload(check_key, media.clip_a))
    async with worker(aws.settings(sqlite_url)) as running:
        aws.send(index_event)
        aws.send(index_event)
        first = await aws.sns_messages(1)
        aws.send(check_event)
        aws.send(check_event)
        second = await aws.sns_messages(1)
        await settled(aws)
        report_before = aws.s3.head_object(Bucket=aws.bucket, Key="songs_to_check/clip a.json")

        aws.send(index_event)
        aws.send(check_event)
        await settled(aws)
        assert await aws.sns_messages(0) == []
        assert (await running.store.stats()).songs == 1
    assert [m.attributes["event_type"] for m in first + second] == [
        "index.result",
        "identify.result",
    ]
    assert first[0].message["song"]["created"] is True
    report_after = aws.s3.head_object(Bucket=aws.bucket, Key="songs_to_check/clip a.json")
    assert report_after["LastModified"] == report_before["LastModified"]
    assert report_after["ETag"] == report_before["ETag"]
    assert aws.queue_depth(aws.dlq_url) == 0


async def test_same_audio_under_another_key_is_not_a_second_song(aws, sqlite_url, media):
    aws.notify_queue_on_upload()
    async with worker(aws.settings(sqlite_url)) as running:
        aws.upload("songs_to_index/one.mp3", media.song_b)
        aws.upload("songs_to_index/copy/two.mp3", media.song_b)
        messages = await aws.sns_messages(2)
        assert (await running.store.stats()).songs == 1
    assert sorted(m.message["song"]["created"] for m in messages) == [False, True]


async def test_long_recordings_get_a_timeline_in_their_report(aws, sqlite_url, media, tmp_path):
    """A recorded hour is many songs: the report lists each with its start and end."""
    decoded = {
        name: decode_audio(path, 22050).samples
        for name, path in (("a", media.song_a), ("b", media.song_b), ("u", media.unknown))
    }
    # song A (24 s), unknown (8 s), song B (24 s), unknown (8 s): 64 s, over the 60-s mark.
    recording = np.concatenate([decoded["a"], decoded["u"], decoded["b"], decoded["u"]])
    path = encode(recording, tmp_path / "hour", "mp3")
    aws.notify_queue_on_upload()
    async with worker(aws.settings(sqlite_url)):
        aws.upload("songs_to_index/a.mp3", media.song_a)
        aws.upload("songs_to_index/b.ogg", media.song_b)
        await aws.sns_messages(2)
        aws.upload("songs_to_check/radio/hour.mp3", path)
        await aws.sns_messages(1)
    report = aws.object_json("songs_to_check/radio/hour.json")
    assert report is not None
    entries = [(e["song"]["title"], e["start_s"], e["end_s"]) for e in report["timeline"]]
    assert [e[0] for e in entries] == ["Tag Title A", "Tag Title B"], entries
    assert entries[0][1] == pytest.approx(0.0, abs=2.0)
    assert entries[0][2] == pytest.approx(24.0, abs=2.0)
    assert entries[1][1] == pytest.approx(32.0, abs=2.0)
    assert entries[1][2] == pytest.approx(56.0, abs=2.0)


# --- message shapes -------------------------------------------------------------------------


async def test_every_event_shape_is_understood(aws, sqlite_url, media):
    """EventBridge and S3 events, raw and SNS-wrapped, with spaces and non-ASCII in keys;
    the S3 test event is acknowledged and dropped."""
    keys = {
        "eventbridge": "songs_to_check/EventBridge/clip ça va.mp3",
        "sns-s3": "songs_to_check/sns s3/clip ü+1.mp3",
        "sns-eventbridge": "songs_to_check/sns eb/clip 東京.mp3",
    }
    etags = {name: aws.upload(key, media.clip_b) for name, key in keys.items()}
    async with worker(aws.settings(sqlite_url)):  # an empty catalogue: no report matches
        aws.send({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": aws.bucket})
        aws.send(sns_envelope({"Service": "Amazon S3", "Event": "s3:TestEvent"}))
        aws.send(eventbridge_event(aws.bucket, keys["eventbridge"], etags["eventbridge"]))
        aws.send(sns_envelope(s3_event(aws.bucket, keys["sns-s3"], etags["sns-s3"])))
        aws.send(
            sns_envelope(
                eventbridge_event(aws.bucket, keys["sns-eventbridge"], etags["sns-eventbridge"])
            )
        )
        messages = await aws.sns_messages(3)
        await settled(aws)
    assert sorted(m.message["key"] for m in messages) == sorted(keys.values())
    for key in keys.values():
        report = aws.object_json(key.removesuffix(".mp3") + ".json")
        assert report["source"]["key"] == key and report["match"] is False
    assert aws.queue_depth(aws.dlq_url) == 0


# --- failures -------------------------------------------------------------------------------


async def test_poison_messages_end_in_the_dead_letter_queue(aws, sqlite_url):
    bodies = [
        "not json",
        "[1, 2]",
        '{"hello": "world"}',
        '{"Type": "Notification", "Message": "x"}',
    ]
    async with worker(aws.settings(sqlite_url)):
        for body in bodies:
            aws.send(body)
        dead = await aws.take(aws.dlq_url, len(bodies), timeout_s=30)
        await settled(aws)
    assert sorted(m["Body"] for m in dead) == sorted(bodies)
    # Moved at their first receive (no retry can fix them), each with its reason.
    for m in dead:
        attributes = {k: v["StringValue"] for k, v in m["MessageAttributes"].items()}
        assert attributes["failure_code"] == "poison_message"
        assert attributes["failure_reason"] and attributes["source_message_id"]
        assert attributes["receive_count"] == "1"
    assert await aws.sns_messages(0, quiet_s=0.5) == []


async def test_bad_audio_is_reported_not_retried(aws, sqlite_url, media):
    aws.notify_queue_on_upload()
    async with worker(aws.settings(sqlite_url)) as running:
        aws.upload("songs_to_check/x/broken.mp3", media.broken)
        aws.upload("songs_to_index/broken.mp3", media.broken)
        messages = await aws.sns_messages(2)
        await settled(aws)
        assert (await running.store.stats()).songs == 0
    by_type = {m.attributes["event_type"]: m for m in messages}
    assert set(by_type) == {"identify.error", "index.error"}
    assert all(m.attributes["match"] == "false" for m in messages)
    report = aws.object_json("songs_to_check/x/broken.json")
    assert report["event_type"] == "identify.error"
    assert report["error"]["code"] in {"not_audio", "undecodable_audio"}
    assert by_type["identify.error"].message["error"] == report["error"]
    assert by_type["index.error"].message["report_key"] is None
    assert aws.object_json("songs_to_index/broken.json") is None  # no reports for indexing
    assert aws.queue_depth(aws.dlq_url) == 0


async def test_hostile_media_is_reported_and_deleted_never_dead_lettered(aws, sqlite_url, tmp_path):
    """Files that crash a naive decoder (a buffer sized from a forged header, a demuxer's
    IndexError, an unknown WAV format tag) or that decode to more than the limit: each gets
    an error report and SNS message at once, no retry, nothing in the dead-letter queue."""
    cases = {c.name: c.data for c in malformed_media(tmp_path)}
    names = [
        "flac_total_max.flac",  # claims 2^36 samples, holds 3 s: identified (no match)
        "ts_packet_headers_2.ts",
        "wav_tag_0x1234.wav",
        "wav_1hz_40k.wav",
        "trunc_m4a_400.m4a",
        "doubled_mp3.mp3",  # 6 s, over the limit set below
    ]
    aws.notify_queue_on_upload()
    settings = aws.settings(sqlite_url, max_identify_audio_s=5.0)
    async with worker(settings):
        for name in names:
            path = tmp_path / name
            path.write_bytes(cases[name])
            aws.upload(f"songs_to_check/hostile/{name}", path)
        messages = await aws.sns_messages(len(names))
        await settled(aws)
    assert len(messages) == len(names)
    errors = {}
    for name in names:
        report = aws.object_json(f"songs_to_check/hostile/{PurePosixPath(name).stem}.json")
        assert report is not None, name
        if report["event_type"] == "identify.error":
            errors[name] = report["error"]["code"]
            assert "/tmp" not in report["error"]["message"]
    assert errors["wav_tag_0x1234.wav"] == "undecodable_audio"
    assert errors["wav_1hz_40k.wav"] == "undecodable_audio"
    assert errors["doubled_mp3.mp3"] == "audio_too_long"
    assert errors["trunc_m4a_400.m4a"] == "not_audio"
    assert aws.queue_depth(aws.dlq_url) == 0


async def test_transient_failures_are_retried_then_dead_lettered(aws, media):
    """The database is down: the message is not deleted, comes back after the backoff, and
    after maxReceiveCount receives the redrive policy parks it in the dead-letter queue."""
    key = "songs_to_check/clip.m4a"
    event = s3_event(aws.bucket, key, aws.upload(key, media.clip_a))
    down = PostgresStore("postgresql://postgres@127.0.0.1:9/none", DEFAULT_PARAMS.version)
    settings = aws.settings("sqlite:///unused.sqlite3")
    async with worker(settings, store=down) as running:
        aws.send(event)
        (dead,) = await aws.take(aws.dlq_url, 1, timeout_s=30)
        assert running.poller.failed >= MAX_RECEIVE_COUNT
    assert json.loads(dead["Body"]) == event
    # The poller moved it on its last receive, saying why.
    attributes = {k: v["StringValue"] for k, v in dead["MessageAttributes"].items()}
    assert attributes["failure_code"] == "store_unavailable"
    assert "PostgreSQL" in attributes["failure_reason"]
    assert attributes["receive_count"] == str(MAX_RECEIVE_COUNT)
    assert aws.object_json("songs_to_check/clip.json") is None
    assert await aws.sns_messages(0, quiet_s=0.5) == []


# --- the poller -----------------------------------------------------------------------------


async def test_poller_receives_only_for_free_slots_and_keeps_messages_invisible(aws):
    """Work outlasting the visibility timeout is not redelivered (the poller extends it), and
    no more messages are taken than there are slots (batch size 10, 2 slots, 4 messages)."""
    handled: list[str] = []
    taken_mid_work: list[int] = []

    def not_visible() -> int:
        attrs = aws.sqs.get_queue_attributes(
            QueueUrl=aws.queue_url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessagesNotVisible"])

    async def slow(message: ReceivedMessage) -> Outcome:
        await asyncio.sleep(1.5)
        taken_mid_work.append(await asyncio.to_thread(not_visible))
        await asyncio.sleep(1.5)  # 3 s of work against a 2-s visibility timeout
        handled.append(message.body)
        return Outcome.DONE

    session = aioboto3.Session(region_name=REGION)
    async with session.client("sqs", endpoint_url=aws.endpoint_url) as sqs:
        poller = SqsPoller(
            sqs,
            aws.queue_url,
            slow,
            concurrency=2,
            batch_size=10,
            wait_s=1,
            visibility_timeout_s=2,
            shutdown_grace_s=10,
        )
        for i in range(4):
            aws.send(f'{{"n": {i}}}')
        poller.start()
        try:
            await aws.until(lambda: len(handled) == 4, timeout_s=30)
        finally:
            await poller.stop()
    assert sorted(handled) == sorted(f'{{"n": {i}}}' for i in range(4))  # once each
    assert taken_mid_work == [2, 2, 2, 2]
    assert poller.processed == 4 and poller.failed == 0
    assert aws.queue_depth(aws.queue_url) == 0


# --- hosts: the API process and the standalone worker ----------------------------------------


def test_the_api_runs_the_worker_when_configured(aws, sqlite_url, media):
    aws.notify_queue_on_upload()
    aws.upload("songs_to_index/a.mp3", media.song_a)
    settings = aws.settings(sqlite_url, run_worker_in_api=True)
    with LiveServer(settings) as server, server.client() as client:
        deadline = time.monotonic() + 30
        while client.get("/songs").json()["total"] == 0:
            assert time.monotonic() < deadline, "the in-process worker indexed nothing"
            time.sleep(0.2)
        assert client.get("/songs").json()["items"][0]["title"] == "Tag Title A"
    assert aws.queue_depth(aws.queue_url) == 0


class _LineReader:
    """Collects a subprocess's stderr lines on a thread; `wait_for` blocks with a timeout."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: Any) -> None:
        for line in stream:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()

    def wait_for(self, text: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for line in self.lines:
                    if text in line:
                        return line
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {text!r} in:\n{''.join(self.lines)}")
                self._cond.wait(left)


def _worker_env(aws: AwsWorld, database_url: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "API_"))}
    env.update(
        {
            "DATABASE_URL": database_url,
            "AWS_ENDPOINT_URL": aws.endpoint_url,
            "S3_BUCKET": aws.bucket,
            "SQS_QUEUE_URL": aws.queue_url,
            "SNS_TOPIC_ARN": aws.topic_arn,
            "SQS_WAIT_S": "1",
            "CPU_WORKERS": "1",
            "WORKER_SHUTDOWN_GRACE_S": "0.2",
            "WORKER_HEALTH_PORT": str(port),
            "LOG_LEVEL": "INFO",
        }
    )
    return env


def _start_worker(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "service.cli", "worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_kill_9_mid_file_leaves_no_process_and_no_download_behind(aws, sqlite_url, tmp_path):
    """The OOM killer or `kill -9` gives the worker no chance to clean up: its analysis
    process notices its parent is gone and exits, and the next worker deletes the download."""
    long_file = encode(np.tile(synth_song(502, 60.0), 12), tmp_path / "long", "flac")
    spool = tmp_path / "spool"
    spool.mkdir()
    port = free_port()
    env = {**_worker_env(aws, sqlite_url, port), "TMPDIR": str(spool)}
    process = _start_worker(env)
    try:
        log = _LineReader(process.stderr)
        log.wait_for(f"health check on http://127.0.0.1:{port}/healthz", timeout_s=60)
        key = "songs_to_check/killed.flac"
        aws.send(s3_event(aws.bucket, key, aws.upload(key, long_file)))
        log.wait_for("processing s3://uploads/songs_to_check/killed.flac", timeout_s=30)
        time.sleep(0.5)  # the download is written and its analysis running
        children = _children_of(process.pid)
        assert children
        assert [p.name for p in spool.iterdir() if p.suffix == ".flac"]
        process.kill()
        process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(_running(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_running(pid) for pid in children)
        assert [p.name for p in spool.iterdir() if p.suffix == ".flac"]  # left behind
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    # The next worker (no queue to read: it is only started) deletes what was left.
    process = _start_worker({**env, "SQS_QUEUE_URL": aws.dlq_url})
    try:
        _LineReader(process.stderr).wait_for("health check on", timeout_s=60)
        assert not [p.name for p in spool.iterdir() if p.name.startswith("song-detection-")]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def test_sigterm_mid_file_releases_the_message_and_exits_0(aws, sqlite_url, tmp_path):
    """ECS stops a task with SIGTERM: the worker stops receiving, gives up the file it is
    working on after the grace period, makes its message visible again and exits 0."""
    # Twelve minutes (a minute of music, tiled: cheap to make, not to fingerprint) in FLAC.
    long_file = encode(np.tile(synth_song(501, 60.0), 12), tmp_path / "long", "flac")
    port = free_port()
    process = _start_worker(_worker_env(aws, sqlite_url, port))
    try:
        log = _LineReader(process.stderr)
        log.wait_for(f"health check on http://127.0.0.1:{port}/healthz", timeout_s=60)
        log.wait_for("polling ", timeout_s=60)
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert health.status_code == 200 and health.json()["status"] == "ok"

        key = "songs_to_check/long set.flac"
        event = s3_event(aws.bucket, key, aws.upload(key, long_file))
        aws.send(event)
        log.wait_for("processing s3://uploads/songs_to_check/long set.flac", timeout_s=30)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, "".join(log.lines)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    log.wait_for("released 1 unfinished message", timeout_s=5)
    # Visible again at once (not after the 30-s visibility timeout), for the next worker.
    (again,) = aws.receive(aws.queue_url)
    assert json.loads(again["Body"]) == event
    assert int(again["Attributes"]["ApproximateReceiveCount"]) == 2
    assert aws.object_json("songs_to_check/long set.json") is None

"""Stream health on both stores: a stream whose audio has a hole of STREAM_DOWN_AFTER_S gets
one stream.down and one stream.up, and the same gap, whatever order its segments arrive in,
found live by the sweeper or afterwards from the segments; the API shows status and gaps."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from service.audio.params import DEFAULT_PARAMS
from service.core.streams.health import (
    detect_down_streams,
    note_segment,
    publish_gap_events,
)
from service.settings import Settings
from service.store import NewStream, Store, StreamSegment, StreamUpdate, create_store
from tests.conftest import LiveServer

NAME = "radio-one"
SEGMENT_S = 12.0
DOWN_AFTER_S = 30.0
T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
#: Segments 0-4 and 10-14: the audio stops at 60 s and comes back at 120 s.
BEFORE, AFTER = list(range(5)), list(range(10, 15))
HOLE = (60.0, 120.0)


@asynccontextmanager
async def opened(url: str) -> AsyncIterator[Store]:
    settings = Settings(database_url=url, environment="test")
    store = create_store(settings, DEFAULT_PARAMS.version)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def deliver(store: Store, sequence: int) -> None:
    """Store one segment and note it, as core/streams/segment.py add_segment does."""
    start_s = sequence * SEGMENT_S
    async with store.stream_lock(NAME):
        state = await store.get_stream(NAME)
        if state is None:
            state = await store.ensure_stream(
                NewStream(NAME, 0.0, T0, start_s + SEGMENT_S, sequence, f"k{sequence:06d}")
            )
        segment = StreamSegment(sequence, f"k{sequence:06d}", start_s, SEGMENT_S, None, 10, b"")
        await store.apply_stream_update(StreamUpdate(stream_id=state.id, segment=segment))
        await note_segment(store, state, sequence, start_s, segment.end_s, DOWN_AFTER_S)


class Topic:
    """What a subscriber of the SNS topic receives."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def send(self, payload: dict[str, Any]) -> None:
        self.events.append(payload)

    async def publish(self, store: Store) -> int:
        return await publish_gap_events(store, self.send, DOWN_AFTER_S)

    @property
    def kinds(self) -> list[str]:
        return [e["event_type"] for e in self.events]


async def gaps_of(store: Store) -> list[tuple[float, float | None]]:
    return [(g.from_s, g.to_s) for g in await store.stream_gaps()]


ORDERS = {
    "in order": BEFORE + AFTER,
    "reversed": list(reversed(BEFORE + AFTER)),
    "after first": AFTER + BEFORE,
    "interleaved": [10, 0, 14, 3, 11, 1, 12, 2, 4, 13],
    **{f"shuffled {seed}": random.Random(seed).sample(BEFORE + AFTER, 10) for seed in range(3)},
}


@pytest.mark.parametrize("order", ORDERS.values(), ids=ORDERS.keys())
async def test_a_hole_gives_one_down_and_one_up_whatever_the_order(
    store_url: str, order: list[int]
) -> None:
    topic = Topic()
    async with opened(store_url) as store:
        for sequence in order:
            await deliver(store, sequence)
        assert await gaps_of(store) == [HOLE]
        assert await topic.publish(store) == 2
        assert await topic.publish(store) == 0  # once each
    assert topic.kinds == ["stream.down", "stream.up"]
    gap = topic.events[0]["gap"]
    assert gap["from"] == "2026-01-05T08:01:00Z" and gap["to"] == "2026-01-05T08:02:00Z"
    assert gap["duration_s"] == 60.0 and topic.events[0]["stream"] == NAME


async def test_small_reorderings_announce_nothing_but_the_hole_as_segments_arrive(
    store_url: str,
) -> None:
    """Published after every segment, as the worker does: segments out of order by less than
    STREAM_DOWN_AFTER_S leave no false outage behind."""
    topic = Topic()
    order = [0, 2, 1, 4, 3, 11, 10, 12, 14, 13]
    async with opened(store_url) as store:
        for sequence in order:
            await deliver(store, sequence)
            await topic.publish(store)
        assert await gaps_of(store) == [HOLE]
    assert topic.kinds == ["stream.down", "stream.up"]


async def test_the_sweeper_sees_a_silent_stream_go_down_once_and_segments_bring_it_up(
    store_url: str,
) -> None:
    topic = Topic()
    async with opened(store_url) as store:
        for sequence in BEFORE:
            await deliver(store, sequence)
        still_up = T0 + timedelta(seconds=60 + DOWN_AFTER_S - 1)
        assert await detect_down_streams(store, DOWN_AFTER_S, now=still_up) == []
        silent = T0 + timedelta(seconds=60 + DOWN_AFTER_S + 5)
        # Two workers' sweepers noticing the same silence open one gap.
        assert await detect_down_streams(store, DOWN_AFTER_S, now=silent) == [NAME]
        assert await detect_down_streams(store, DOWN_AFTER_S, now=silent) == []
        assert await gaps_of(store) == [(60.0, None)]
        await topic.publish(store)
        assert topic.kinds == ["stream.down"]
        assert topic.events[0]["gap"]["to"] is None
        for sequence in reversed(AFTER):  # the return arrives out of order
            await deliver(store, sequence)
            await topic.publish(store)
        assert await gaps_of(store) == [HOLE]
        later = T0 + timedelta(seconds=180 + DOWN_AFTER_S - 1)
        assert await detect_down_streams(store, DOWN_AFTER_S, now=later) == []
    assert topic.kinds == ["stream.down", "stream.up"]


def test_the_api_shows_status_last_segment_and_gaps(sqlite_url: str) -> None:
    async def prepare() -> None:
        async with opened(sqlite_url) as store:
            for sequence in BEFORE + AFTER[:2]:
                await deliver(store, sequence)
            await detect_down_streams(store, DOWN_AFTER_S, now=T0 + timedelta(days=1))

    asyncio.run(prepare())
    settings = Settings(database_url=sqlite_url, cpu_workers=1, environment="test")
    with LiveServer(settings) as live, live.client() as client:
        one = client.get(f"/streams/{NAME}")
        listed = client.get("/streams").json()
        missing = client.get("/streams/nowhere")
    assert one.status_code == 200, one.text
    body = one.json()
    assert body["status"] == "down" and body["last_segment_at"]
    assert [(g["from"], g["to"]) for g in body["gaps"]] == [
        ("2026-01-05T08:01:00Z", "2026-01-05T08:02:00Z"),
        ("2026-01-05T08:02:24Z", None),
    ]
    assert body["gaps"][0]["duration_s"] == 60.0 and body["gaps"][1]["duration_s"] > 86000
    (in_list,) = listed
    assert in_list["status"] == "down" and in_list["name"] == NAME
    assert [(g["from"], g["to"]) for g in in_list["gaps"]] == [
        (g["from"], g["to"]) for g in body["gaps"]
    ]
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


async def test_stream_events_reach_the_sns_topic_once_with_their_attributes(
    aws, sqlite_url: str
) -> None:
    """Through the worker's SnsPublisher (moto's SNS into a subscribed queue), as the stream
    sweeper and each segment's publication send them."""
    from service.aws.clients import AwsClients
    from service.aws.reports import SnsPublisher

    settings = aws.settings(sqlite_url)
    clients = await AwsClients.open(settings)
    try:
        publisher = SnsPublisher(clients.sns, aws.topic_arn, DOWN_AFTER_S)
        async with opened(sqlite_url) as store:
            for sequence in BEFORE:
                await deliver(store, sequence)
            silent = T0 + timedelta(seconds=60 + DOWN_AFTER_S + 5)
            assert await detect_down_streams(store, DOWN_AFTER_S, now=silent) == [NAME]
            assert await publisher.publish_stream_events(store) == 1
            for sequence in AFTER:
                await deliver(store, sequence)
            assert await publisher.publish_stream_events(store) == 1
            assert await publisher.publish_stream_events(store) == 0
        messages = await aws.sns_messages(2)
    finally:
        await clients.close()
    assert [m.message["event_type"] for m in messages] == ["stream.down", "stream.up"]
    assert [m.attributes["event_type"] for m in messages] == ["stream.down", "stream.up"]
    assert all(m.attributes["stream"] == NAME for m in messages)
    assert messages[0].message["gap"]["to"] is None
    assert messages[1].message["gap"]["to"] == "2026-01-05T08:02:00Z"
    assert messages[0].message["gap_id"] == messages[1].message["gap_id"]

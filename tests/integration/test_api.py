"""The HTTP API end to end: a real uvicorn server, real encoded audio, real databases."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.settings import Settings
from tests.audio_fixtures import encode, excerpt
from tests.conftest import CatalogueSong, LiveServer


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest, module_store_url: str) -> Iterator[LiveServer]:
    settings = Settings(database_url=module_store_url, cpu_workers=1, environment="test")
    with LiveServer(settings) as live:
        yield live


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


@pytest.fixture(scope="module")
def indexed(client: httpx.Client, catalogue: list[CatalogueSong]) -> dict[int, dict]:
    """Index every catalogue song once per backend; seed -> response body."""
    out = {}
    for song in catalogue:
        with song.path.open("rb") as f:
            r = client.post("/songs", files={"file": (song.path.name, f)})
        assert r.status_code == 201, r.text
        out[song.seed] = r.json()
    return out


def _post_file(client: httpx.Client, url: str, path: Path, **data: str) -> httpx.Response:
    with path.open("rb") as f:
        return client.post(url, files={"file": (path.name, f)}, data=data)


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json() == {"status": "ready"}
    assert client.get("/openapi.json").json()["info"]["title"] == "song-detection"
    assert client.get("/docs").status_code == 200


def test_index_reports_song_fields_from_tags(indexed, catalogue):
    body = indexed[1]
    assert body["title"] == "Song 1" and body["artist"] == "Artist 1"
    assert body["created"] is True
    assert body["duration_s"] == pytest.approx(40.0, abs=0.1)
    assert body["fingerprint_count"] > 1000
    assert set(body) == {
        "id", "title", "artist", "album", "isrc", "external_id", "duration_s",
        "fingerprint_count", "created_at", "created", "source", "duplicate_of",
        "duplicate_coverage",
    }  # fmt: skip
    assert body["source"] is None and body["duplicate_of"] is None
    # The MPEG-TS song (video + AAC) carries no tags: its title falls back to the file name.
    assert indexed[2]["title"] == catalogue[1].path.stem


def test_form_fields_override_tags_and_reupload_is_not_duplicated(client, tmp_path, catalogue):
    song = catalogue[2]
    path = encode(song.samples[: 22050 * 15], tmp_path / "fresh", "flac")
    r = _post_file(client, "/songs", path, title="Given", artist="Someone", isrc="XX1234567890")
    assert r.status_code == 201, r.text
    first = r.json()
    assert (first["title"], first["artist"], first["isrc"]) == ("Given", "Someone", "XX1234567890")
    # The same audio again, in another lossless container, is recognised by its content.
    same = encode(song.samples[: 22050 * 15], tmp_path / "again", "wav")
    r = _post_file(client, "/songs", same, title="Other title")
    assert r.status_code == 200, r.text
    assert r.json()["created"] is False and r.json()["id"] == first["id"]
    total = client.get("/songs", params={"q": "Given"}).json()["total"]
    assert total == 1
    assert client.delete(f"/songs/{first['id']}").status_code == 204


@pytest.mark.parametrize("fmt", ["mp3", "aac_m4a", "ts_video"])
def test_damaged_audio_keeps_its_clock_and_says_where_it_was_damaged(
    client, indexed, catalogue, tmp_path, fmt
):
    from tests.unit.test_decode_damage import damage

    song = catalogue[0]  # 40 s; a 30-s clip from 6 s, its middle third damaged
    path = encode(excerpt(song.samples, 6.0, 30.0), tmp_path / "clip", fmt)
    clip = path.read_bytes()
    damaged = tmp_path / f"damaged{path.suffix}"
    damaged.write_bytes(damage(clip, fmt, 1 / 3, 2 / 3))
    r = _post_file(client, "/identify", damaged)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["duration_s"] == pytest.approx(30.0, abs=0.2)
    (span,) = body["damaged_spans"]
    assert span["start_s"] == pytest.approx(10.0, abs=1.5)
    assert span["end_s"] == pytest.approx(20.0, abs=1.5)
    best = body["matches"][0]
    assert best["song"]["id"] == indexed[1]["id"]
    # The song is where it played: 6 s into it at the clip's start, damage or not.
    assert best["song_offset_s"] == pytest.approx(6.0, abs=0.5)
    # Mostly damaged: refused, in the documented error shape.
    damaged.write_bytes(damage(clip, fmt, 0.15, 0.85))
    r = _post_file(client, "/identify", damaged)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "undecodable_audio"


@pytest.mark.parametrize(
    ("seed", "start_s", "length_s", "fmt"),
    [
        (1, 12.3, 5.0, "aac_m4a"),  # indexed as MP3
        (2, 3.0, 10.0, "mp3_64k"),  # indexed as AAC in MPEG-TS with video
        (3, 25.7, 7.0, "opus"),  # indexed as Ogg Vorbis
        (4, 30.0, 8.0, "ts_video"),  # indexed as AAC in M4A
    ],
)
def test_identify_excerpt_in_another_codec(
    client, indexed, catalogue, tmp_path, seed, start_s, length_s, fmt
):
    song = catalogue[seed - 1]
    clip = encode(excerpt(song.samples, start_s, length_s), tmp_path / "clip", fmt)
    r = _post_file(client, "/identify", clip)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["duration_s"] == pytest.approx(length_s, abs=0.1)
    assert body["elapsed_ms"] > 0
    best = body["matches"][0]
    assert best["song"]["id"] == indexed[seed]["id"]
    assert best["song_offset_s"] == pytest.approx(start_s, abs=0.5)
    assert 0.99 <= best["confidence"] <= 1.0
    assert 0 <= best["query_start_s"] < best["query_end_s"] <= length_s + 0.2
    assert best["speed"] == 1.0
    assert best["evidence"] == "landmarks"
    # Nothing else in the catalogue plays in this clip.
    assert [m["song"]["id"] for m in body["matches"]] == [indexed[seed]["id"]]


def test_unknown_clip_gets_no_match(client, indexed, unknown_song, tmp_path):
    clip = encode(excerpt(unknown_song, 4.0, 10.0), tmp_path / "unknown", "mp3")
    r = _post_file(client, "/identify", clip)
    assert r.status_code == 200
    assert r.json()["matches"] == []


def test_catalogue_listing_paging_filter_and_edit(client, indexed):
    page = client.get("/songs", params={"limit": 2, "offset": 0}).json()
    assert page["total"] >= 4 and len(page["items"]) == 2 and page["limit"] == 2
    second = client.get("/songs", params={"limit": 2, "offset": 2}).json()
    assert {s["id"] for s in page["items"]}.isdisjoint({s["id"] for s in second["items"]})
    found = client.get("/songs", params={"q": "artist 3"}).json()
    assert [s["id"] for s in found["items"]] == [indexed[3]["id"]]
    song_id = indexed[4]["id"]
    r = client.patch(f"/songs/{song_id}", json={"album": "Greatest", "external_id": "cat-4"})
    assert r.status_code == 200 and r.json()["album"] == "Greatest"
    got = client.get(f"/songs/{song_id}").json()
    assert (got["album"], got["external_id"], got["title"]) == ("Greatest", "cat-4", "Song 4")
    assert client.patch(f"/songs/{song_id}", json={"title": ""}).status_code == 422
    for blank in (None, "   "):  # a title can change, never go blank
        r = client.patch(f"/songs/{song_id}", json={"title": blank})
        assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"
    assert client.patch(f"/songs/{song_id}", json={"bogus": 1}).status_code == 422


def test_deleted_song_is_no_longer_identified(client, tmp_path):
    from tests.audio_fixtures import synth_song

    samples = synth_song(555, 25.0)
    r = _post_file(client, "/songs", encode(samples, tmp_path / "temp", "mp3"))
    song_id = r.json()["id"]
    clip = encode(excerpt(samples, 5.0, 8.0), tmp_path / "clip", "ogg")
    assert _post_file(client, "/identify", clip).json()["matches"][0]["song"]["id"] == song_id
    assert client.delete(f"/songs/{song_id}").status_code == 204
    assert _post_file(client, "/identify", clip).json()["matches"] == []
    assert client.get(f"/songs/{song_id}").status_code == 404
    assert client.delete(f"/songs/{song_id}").status_code == 404


def _assert_error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"]["code"] == code
    assert body["error"]["message"]


def test_error_responses(client, tmp_path, catalogue):
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    _assert_error(_post_file(client, "/identify", empty), 400, "empty_file")
    text = tmp_path / "readme.txt"
    text.write_text("definitely not audio\n" * 100)
    r = _post_file(client, "/songs", text)
    assert r.status_code in (415, 422) and r.json()["error"]["code"] in (
        "not_audio",
        "undecodable_audio",
    )
    broken = tmp_path / "broken.m4a"
    broken.write_bytes(catalogue[3].path.read_bytes()[:400])
    r = _post_file(client, "/identify", broken)
    assert r.status_code in (415, 422) and "error" in r.json()
    short = encode(catalogue[0].samples[:5000], tmp_path / "short", "wav")
    _assert_error(_post_file(client, "/identify", short), 422, "audio_too_short")
    _assert_error(client.post("/identify"), 422, "validation_error")
    _assert_error(client.get("/songs/999999"), 404, "not_found")
    _assert_error(client.get("/songs", params={"limit": 0}), 422, "validation_error")
    _assert_error(client.get("/nowhere"), 404, "not_found")


def test_upload_limit_and_api_key(module_store_url, tmp_path, catalogue):
    settings = Settings(
        database_url=module_store_url,
        cpu_workers=1,
        upload_max_bytes=100_000,
        api_key="s3cret",
        environment="test",
    )
    with LiveServer(settings) as live, live.client() as c:
        assert c.get("/healthz").status_code == 200  # health needs no key
        _assert_error(c.get("/songs"), 401, "unauthorized")
        _assert_error(c.get("/songs", headers={"X-API-Key": "wrong"}), 401, "unauthorized")
        assert c.get("/songs", headers={"X-API-Key": "s3cret"}).status_code == 200
        big = catalogue[0].path  # a 40-s MP3 is well over 100 kB
        assert big.stat().st_size > 100_000
        # Without the key, refused before the body is read; with it, for its size, and the
        # message names the setting's value.
        _assert_error(_post_file(c, "/identify", big), 401, "unauthorized")
        with big.open("rb") as f:
            r = c.post("/identify", files={"file": (big.name, f)}, headers={"X-API-Key": "s3cret"})
        _assert_error(r, 413, "payload_too_large")
        assert r.json()["error"]["message"] == "upload exceeds the limit of 100000 bytes"
        # An upload that never ends gets its 401 at once: the server does not wait for it.
        with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
            sock.sendall(
                b"POST /songs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                b"Content-Type: multipart/form-data; boundary=b\r\n\r\n"
            )
            head = sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 401") and b'"unauthorized"' in head

        # A chunked multipart upload (no Content-Length) is counted as it streams in.
        boundary = "b0undary"

        def chunks():
            yield (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                f'filename="big.mp3"\r\nContent-Type: audio/mpeg\r\n\r\n'
            ).encode()
            for _ in range(30):
                yield b"x" * 10_000
            yield f"\r\n--{boundary}--\r\n".encode()

        r = c.post(
            "/identify",
            content=chunks(),
            headers={
                "X-API-Key": "s3cret",
                "Content-Type": f"multipart/form-data; boundary={boundary}",
            },
        )
        _assert_error(r, 413, "payload_too_large")


def test_timeline_of_a_mix(client, indexed, catalogue, unknown_song, tmp_path):
    """A DJ-style mix: song 1, an unknown song, song 3 played 3 % fast, song 1 again."""
    import soxr

    rate = 22050
    s1, s3 = catalogue[0].samples, catalogue[2].samples
    fast = soxr.resample(s3[10 * rate : 30 * rate], rate, rate / 1.03).astype(np.float32)
    parts = [
        s1[5 * rate : 25 * rate],  # 0-20 s: song 1 from 5 s
        unknown_song[: 12 * rate],  # 20-32 s: not in the catalogue
        fast,  # 32-51.4 s: song 3 from 10 s, 3 % fast
        s1[25 * rate : 38 * rate],  # 51.4-64.4 s: song 1 again, from 25 s
    ]
    mix = encode(np.concatenate(parts), tmp_path / "mix", "mp3")
    with mix.open("rb") as f:
        r = client.post("/identify", params={"timeline": "true"}, files={"file": ("mix.mp3", f)})
    assert r.status_code == 200, r.text
    timeline = r.json()["timeline"]
    got = [
        (e["song"]["id"], e["start_s"], e["end_s"], e["song_start_s"], e["speed"]) for e in timeline
    ]
    expected = [
        (indexed[1]["id"], 0.0, 20.0, 5.0, 1.0),
        (indexed[3]["id"], 32.0, 51.4, 10.0, 1.03),
        (indexed[1]["id"], 51.4, 64.4, 25.0, 1.0),
    ]
    assert [g[0] for g in got] == [e[0] for e in expected], got
    for (_, start, end, song_start, speed), (_, e_start, e_end, e_song, e_speed) in zip(
        got, expected, strict=True
    ):
        assert start == pytest.approx(e_start, abs=2.0)
        assert end == pytest.approx(e_end, abs=2.0)
        assert song_start == pytest.approx(e_song + (start - e_start) * e_speed, abs=0.5)
        assert speed == pytest.approx(e_speed, abs=0.01)
    # A file this long (64 s) is matched window by window: its matches are the timeline's
    # songs, each once as its best entry: song 1 (20 s at its own speed) before song 3.
    matches = r.json()["matches"]
    assert [m["song"]["id"] for m in matches] == [indexed[1]["id"], indexed[3]["id"]]
    assert matches[1]["speed"] == pytest.approx(1.03, abs=0.01)
    assert matches[1]["query_start_s"] == pytest.approx(32.0, abs=2.0)
    # Without the flag no timeline is returned; the matches are the same.
    with mix.open("rb") as f:
        plain = client.post("/identify", files={"file": ("mix.mp3", f)}).json()
    assert plain["timeline"] is None
    assert [m["song"]["id"] for m in plain["matches"]] == [m["song"]["id"] for m in matches]

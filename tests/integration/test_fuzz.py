"""Fuzzing the HTTP API on both stores: every input gets 2xx or a 4xx in the error shape.

A real server (uvicorn on a free port) with a real catalogue receives hundreds of malformed
media files made from the test music (tests/fuzz_media.py), malformed multipart bodies, hostile
file names, NUL characters and out-of-range numbers, several requests at a time. Nothing may
answer 5xx or hang, every error has the documented shape and no server path in its message,
and afterwards the catalogue holds exactly the songs the 201s announced, each whole.

Reproducible: FUZZ_SEED (default 20) chooses the files and the order of the requests.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from service.audio.params import DEFAULT_PARAMS
from service.settings import Settings
from service.store import create_store
from tests.conftest import LiveServer
from tests.fuzz_media import malformed_media

SEED = int(os.environ.get("FUZZ_SEED", "20"))

#: Statuses a client error may have; 5xx never.
CLIENT_ERRORS = {400, 401, 404, 405, 413, 415, 422}


@dataclass
class Ledger:
    """What the server told us it stored."""

    created: dict[int, str] = field(default_factory=dict)  # song id -> name of the request
    #: Songs a 200 said were indexed before (checked against `created` at the end: the 201
    #: of a concurrent upload of the same audio may come back later).
    known: dict[int, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def check(r: httpx.Response, what: str, ledger: Ledger) -> None:
    """No 5xx, and every error in the documented shape with a clean message."""
    if r.status_code >= 500:
        ledger.failures.append(f"{what}: {r.status_code} {r.text[:300]}")
        return
    if r.status_code >= 400:
        if r.status_code not in CLIENT_ERRORS:
            ledger.failures.append(f"{what}: unexpected status {r.status_code}")
        try:
            body = r.json()
        except ValueError:
            ledger.failures.append(f"{what}: {r.status_code} without JSON: {r.text[:200]!r}")
            return
        error = body.get("error") if isinstance(body, dict) else None
        if (
            set(body) != {"error"}
            or not isinstance(error, dict)
            or set(error) != {"code", "message"}
            or not isinstance(error["code"], str)
            or not error["message"]
        ):
            ledger.failures.append(f"{what}: not the error shape: {r.text[:200]}")
        elif "/tmp" in error["message"] or "Errno" in error["message"]:
            ledger.failures.append(f"{what}: message leaks internals: {error['message']}")


def post_song(client: httpx.Client, name: str, data: bytes, ledger: Ledger, **form: str) -> None:
    r = client.post("/songs", files={"file": (name, data)}, data=form)
    check(r, f"POST /songs {name!r}", ledger)
    if r.status_code == 201:
        ledger.created[r.json()["id"]] = name
    elif r.status_code == 200:
        body = r.json()
        if body["created"] is not False:
            ledger.failures.append(f"POST /songs {name!r}: 200 with created={body['created']}")
        ledger.known[body["id"]] = name


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, bytes]]:
    cases = malformed_media(tmp_path_factory.mktemp("fuzz"), seed=SEED)
    return [(c.name, c.data) for c in cases]


@pytest.fixture(scope="module")
def server(module_store_url: str) -> Iterator[tuple[LiveServer, Settings]]:
    settings = Settings(database_url=module_store_url, cpu_workers=2, environment="test")
    with LiveServer(settings) as live:
        yield live, settings


def _multipart_attacks() -> list[tuple[str, dict[str, Any]]]:
    """(description, httpx request arguments) of malformed bodies and names."""
    boundary = "fuzzboundary"
    ctype = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    part = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.mp3"\r\n'
        "Content-Type: audio/mpeg\r\n\r\n"
    ).encode()
    wav = b"RIFF\x24\x00\x00\x00WAVEfmt "
    audio = {"Content-Type": "audio/mpeg"}
    odd_charset = {"Content-Type": ctype["Content-Type"] + "; charset=\x7f"}
    attacks: list[tuple[str, dict[str, Any]]] = [
        ("no body", {}),
        ("json instead of a form", {"json": {"file": "x"}}),
        ("text field instead of a file", {"data": {"file": "not a file"}}),
        ("wrong field name", {"files": {"upload": ("a.mp3", b"\xff\xfb" * 100)}}),
        ("no boundary", {"content": part, "headers": {"Content-Type": "multipart/form-data"}}),
        ("unterminated part", {"content": part + b"\xff\xfb" * 100, "headers": ctype}),
        ("only a closing boundary", {"content": f"--{boundary}--\r\n".encode(), "headers": ctype}),
        ("garbage body", {"content": os.urandom(4096), "headers": ctype}),
        ("header without end", {"content": part[:60], "headers": ctype}),
        (
            "two files",
            {"files": [("file", ("a.wav", wav)), ("file", ("b.wav", wav))]},
        ),
        ("wrong content type", {"content": b"\xff\xfb" * 100, "headers": audio}),
        ("bad charset", {"content": part, "headers": odd_charset}),
    ]
    names = [
        "", ".", "..", "../../etc/passwd", "a" * 5000 + ".mp3", "\x00.mp3", "a\x00b.wav",
        "名前.mp3", "\u202etxt.mp3", "con.mp3", "x" * 200, "%00.mp3", "a/b\\c.mp3",
    ]  # fmt: skip
    for name in names:
        attacks.append((f"file name {name[:30]!r}", {"files": {"file": (name, b"\xff\xfb" * 50)}}))
    return attacks


def _field_attacks(rng: random.Random) -> list[tuple[str, dict[str, str]]]:
    nul = "a\x00b"
    return [
        ("NUL title", {"title": nul}),
        ("NUL artist", {"artist": nul}),
        ("NUL album", {"album": "\x00"}),
        ("NUL isrc", {"isrc": nul}),
        ("NUL external id", {"external_id": nul}),
        ("long title", {"title": "t" * 501}),
        ("long isrc", {"isrc": "i" * 65}),
        ("control characters", {"title": "".join(chr(rng.randrange(1, 32)) for _ in range(40))}),
        ("lone surrogate escape", {"title": "\\ud800"}),
    ]


def _get_attacks() -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, request arguments) of bad parameters: numbers, NULs, dates."""
    big = [2**31, 2**31 - 1, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 10**30]
    out: list[tuple[str, str, dict[str, Any]]] = []
    for n in big:
        out += [("GET", f"/songs/{n}", {}), ("DELETE", f"/songs/{n}", {})]
        out += [("PATCH", f"/songs/{n}", {"json": {"title": "x"}})]
        out += [
            ("GET", "/songs", {"params": {"offset": n}}),
            ("GET", "/songs", {"params": {"limit": n}}),
        ]
        out += [("GET", f"/streams/radio/plays/{n}", {})]
        out += [("GET", "/streams/radio/plays", {"params": {"offset": n, "limit": n}})]
    for text in [
        "1.0",
        "1e3",
        "+1",
        "-1",
        "0",
        "1_0",
        "0x1",
        " 1",
        "١",
        "1 ",
        "nan",
        "inf",
        "true",
    ]:
        out += [("GET", f"/songs/{text}", {}), ("DELETE", f"/songs/{text}", {})]
        out += [
            ("GET", "/songs", {"params": {"offset": text}}),
            ("GET", "/songs", {"params": {"limit": text}}),
        ]
    for q in ["\x00", "a\x00", "%", "_", "\\", "'; DROP TABLE songs; --", "ß" * 200, "x" * 201]:
        out += [("GET", "/songs", {"params": {"q": q}})]
    for stream in ["a%00b", "%00", "..", "x" * 5000, "%F0%9F%8E%B5", "a%2Fb"]:
        out += [("GET", f"/streams/{stream}/plays", {}), ("GET", f"/streams/{stream}/plays/1", {})]
    for moment in ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "garbage", "2024-13-45", "1e30"]:
        out += [("GET", "/streams/radio/plays", {"params": {"from": moment}})]
        out += [("GET", "/streams/radio/plays", {"params": {"to": moment, "format": "csv"}})]
    patches: list[Any] = [
        {"title": "a\x00b"}, {"title": ""}, {"title": None}, {"id": 5}, {"duration_s": 1},
        {"title": 5}, [], "text", {"isrc": "i" * 65}, {"external_id": "\x00"},
    ]  # fmt: skip
    for body in patches:
        out += [("PATCH", "/songs/1", {"json": body})]
    out += [
        (
            "PATCH",
            "/songs/1",
            {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
        )
    ]
    out += [("POST", "/songs/1", {}), ("PUT", "/songs", {}), ("GET", "/identify", {})]
    out += [
        ("POST", "/identify", {"params": {"timeline": "maybe"}, "files": {"file": ("a.mp3", b"x")}})
    ]
    return out


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and len(b"".join(chunks)) > 100:
                break
        return b"".join(chunks)


def test_fuzz_the_api(server, media):
    live, settings = server
    rng = random.Random(SEED)
    ledger = Ledger()
    jobs = []

    def song_job(name: str, data: bytes) -> Any:
        return lambda c: post_song(c, name, data, ledger)

    def identify_job(name: str, data: bytes) -> Any:
        def run(c: httpx.Client) -> None:
            r = c.post("/identify", files={"file": (name, data)})
            check(r, f"POST /identify {name!r}", ledger)

        return run

    # Every malformed file is offered for indexing, a third also for identification.
    for i, (name, data) in enumerate(media):
        jobs.append(song_job(name, data))
        if i % 3 == 0:
            jobs.append(identify_job(name, data))
    # Good audio with hostile metadata: NULs are refused, whatever else is stored as given.
    good = next(data for name, data in media if name == "doubled_ogg.ogg")
    for description, form in _field_attacks(rng):
        jobs.append(
            lambda c, d=description, f=form: post_song(c, f"fields {d}.ogg", good, ledger, **f)
        )
    for description, kwargs in _multipart_attacks():
        for path in ("/songs", "/identify"):
            jobs.append(
                lambda c, d=description, p=path, k=kwargs: check(
                    c.post(p, **k), f"POST {p} {d}", ledger
                )
            )
    for method, path, kwargs in _get_attacks():
        jobs.append(
            lambda c, m=method, p=path, k=kwargs: check(
                c.request(m, p, **k), f"{m} {p} {k}"[:200], ledger
            )
        )
    rng.shuffle(jobs)

    clients = [live.client() for _ in range(4)]
    try:
        with ThreadPoolExecutor(4) as executor:
            futures = [executor.submit(job, clients[i % 4]) for i, job in enumerate(jobs)]
            for future in futures:
                future.result(timeout=120)
    finally:
        for c in clients:
            c.close()

    # Requests no client library sends: unparseable Content-Length and request lines.
    for request in [
        b"POST /songs HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        b"POST /songs HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST /songs HTTP/1.1\r\nHost: x\r\nContent-Length: 1e9\r\n\r\n",
        b"POST /songs HTTP/1.1\r\nHost: x\r\nContent-Length: 9223372036854775807\r\n\r\n",
        b"GET /songs\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GARBAGE\r\n\r\n",
    ]:
        answer = _raw(live.port, request)
        head, _, body = answer.partition(b"\r\n\r\n")
        status = int(head.split()[1])
        assert 400 <= status < 500, answer[:300]
        assert b'"error"' in body and b'"code"' in body, answer[:300]

    assert not ledger.failures, f"FUZZ_SEED={SEED}:\n" + "\n".join(ledger.failures[:40])
    assert set(ledger.known) <= set(ledger.created), f"FUZZ_SEED={SEED}: {ledger.known}"
    assert len(jobs) > 400

    # The catalogue is exactly what the 201s announced.
    with live.client() as c:
        listed = c.get("/songs", params={"limit": 1000}).json()
        assert {s["id"] for s in listed["items"]} == set(ledger.created), f"FUZZ_SEED={SEED}"
        assert listed["total"] == len(ledger.created)
        for song in listed["items"]:
            assert "\x00" not in song["title"]
            assert song["fingerprint_count"] > 0 and song["duration_s"] >= 1.0
        # `/songs/1.0` is not song 1, for reading or deleting.
        if ledger.created:
            first = min(ledger.created)
            assert c.get(f"/songs/{first}.0").status_code == 422
            assert c.delete(f"/songs/{first}.0").status_code == 422
            assert c.get(f"/songs/{first}").status_code == 200
    assert ledger.created, "some of the damaged files still decode and index"

    # Whole songs only: the store's fingerprints are exactly those of the songs it lists.
    async def totals() -> tuple[int, int]:
        store = create_store(settings, DEFAULT_PARAMS.version)
        await store.open()
        try:
            stats = await store.stats()
            return stats.songs, stats.fingerprints
        finally:
            await store.close()

    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        songs, fingerprints = runner.run(totals())
    assert songs == len(ledger.created)
    assert fingerprints == sum(s["fingerprint_count"] for s in listed["items"])


def test_identical_seed_identical_files(tmp_path, media):
    again = malformed_media(tmp_path, seed=SEED)
    assert [(c.name, c.data) for c in again] == media
    assert len(media) >= 200
    other = malformed_media(tmp_path, seed=SEED + 1)
    assert [c.data for c in other] != [data for _, data in media]

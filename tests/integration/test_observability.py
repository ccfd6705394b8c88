"""What an operator sees: JSON log lines with request ids from the real `serve` process,
Prometheus metrics that move as requests are made, and backpressure (503 + Retry-After)
from a saturated server instead of an unbounded queue."""

from __future__ import annotations

import concurrent.futures
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.settings import Settings
from tests.audio_fixtures import encode, synth_song
from tests.aws_fixtures import free_port, s3_event
from tests.conftest import CatalogueSong, LiveServer
from tests.integration.test_startup import ROOT, base_env, poll
from tests.integration.test_worker import _worker_env

# --- logs ---------------------------------------------------------------------------------


def _serve(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def test_serve_writes_one_json_object_per_line_with_the_request_id(
    tmp_path: Path, catalogue: list[CatalogueSong]
) -> None:
    port = free_port()
    env = base_env(f"sqlite:///{tmp_path / 'logs.sqlite3'}", tmp_path) | {
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "LOG_FORMAT": "json",
    }
    log_path = tmp_path / "serve.log"
    process = _serve(env, log_path)
    base = f"http://127.0.0.1:{port}"
    try:
        poll(f"{base}/readyz", 200, process, log_path)
        song = catalogue[0]
        with httpx.Client(base_url=base, timeout=60) as client:
            with song.path.open("rb") as f:
                indexed = client.post(
                    "/songs",
                    files={"file": (song.path.name, f)},
                    headers={"X-Request-ID": "index-req-1"},
                )
            assert indexed.status_code == 201, indexed.text
            with song.path.open("rb") as f:
                found = client.post(
                    "/identify",
                    files={"file": (song.path.name, f)},
                    headers={"X-Request-ID": "identify-req-2"},
                )
            assert found.status_code == 200, found.text
            assert found.headers["X-Request-ID"] == "identify-req-2"
            missing = client.get("/songs/999999")  # no id given: one is made up
            made_up = missing.headers["X-Request-ID"]
            assert missing.status_code == 404 and len(made_up) == 32
            hostile = client.get("/healthz", headers={"X-Request-ID": "x" * 500})
            assert hostile.headers["X-Request-ID"] != "x" * 500
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert records, "serve logged nothing"
    for record in records:
        assert {"timestamp", "level", "logger", "message"} <= record.keys(), record

    def of(request_id: str) -> list[dict]:
        return [r for r in records if r.get("request_id") == request_id]

    access = [r for r in of("identify-req-2") if r["logger"] == "uvicorn.access"]
    assert len(access) == 1
    assert access[0]["method"] == "POST" and access[0]["path"] == "/identify"
    assert access[0]["status"] == 200 and access[0]["elapsed_ms"] > 0
    (result,) = [r for r in of("identify-req-2") if r.get("event") == "identify.result"]
    assert result["match"] is True
    assert result["songs"][0]["id"] == indexed.json()["id"]
    assert result["confidences"][0] > 0.9 and result["evidence"][0] in ("landmarks", "envelope")
    assert result["elapsed_ms"] > 0
    (index,) = [r for r in of("index-req-1") if r.get("event") == "index.result"]
    assert index["song_created"] is True and index["song_id"] == indexed.json()["id"]
    assert [r["status"] for r in of(made_up) if r["logger"] == "uvicorn.access"] == [404]
    # Lines outside any request (start-up, shutdown) carry no request id.
    assert any(r["message"] == "Application shutdown complete." for r in records)


# --- metrics ------------------------------------------------------------------------------


def _scrape(client: httpx.Client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def small_server(sqlite_url: str) -> Iterator[LiveServer]:
    settings = Settings(database_url=sqlite_url, cpu_workers=1, environment="test")
    with LiveServer(settings) as live:
        yield live


def test_metrics_move_as_songs_are_indexed_and_identified(
    small_server: LiveServer, catalogue: list[CatalogueSong]
) -> None:
    song = catalogue[1]
    with small_server.client() as client:
        before = _scrape(client)
        with song.path.open("rb") as f:
            assert client.post("/songs", files={"file": (song.path.name, f)}).status_code == 201
        with song.path.open("rb") as f:
            assert client.post("/identify", files={"file": (song.path.name, f)}).status_code == 200
        assert client.get("/songs/424242").status_code == 404
        after = _scrape(client)

    def moved(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    ident = {"route": "/identify", "method": "POST", "status": "200"}
    assert moved("songdetect_http_request_duration_seconds_count", **ident) == 1
    assert moved("songdetect_http_request_duration_seconds_bucket", **ident, le="+Inf") == 1
    assert moved("songdetect_http_request_duration_seconds_bucket", **ident, le="120.0") == 1
    missing = {"route": "/songs/{song_id}", "method": "GET", "status": "404"}
    assert moved("songdetect_http_request_duration_seconds_count", **missing) == 1
    assert (
        moved("songdetect_identify_results_total", outcome="match", evidence="landmarks")
        + (moved("songdetect_identify_results_total", outcome="match", evidence="envelope"))
        == 1
    )
    assert moved("songdetect_index_results_total", outcome="created") == 1
    assert moved("songdetect_cpu_task_seconds_count", task="analyse_file") == 1
    assert moved("songdetect_cpu_task_seconds_count", task="analyse_query") == 1
    assert moved("songdetect_identify_lookup_seconds_count") == 1
    assert _value(after, "songdetect_catalogue_songs") == 1
    assert _value(after, "songdetect_catalogue_audio_hours") == pytest.approx(40 / 3600, rel=0.01)
    assert _value(after, "songdetect_catalogue_fingerprints") > 1000
    assert _value(after, "songdetect_cpu_pool_workers") == 1
    assert _value(after, "songdetect_cpu_pool_queue_depth") == 0


# --- backpressure -------------------------------------------------------------------------


def test_a_saturated_server_answers_503_with_retry_after_instead_of_queueing(
    sqlite_url: str, tmp_path: Path
) -> None:
    """One analysis process and no queue: of eight concurrent 90-s uploads, those that arrive
    while another is analysed are refused at once, in the API's error shape."""
    clip = encode(synth_song(7, 90.0), tmp_path / "long", "mp3")
    settings = Settings(database_url=sqlite_url, cpu_workers=1, cpu_queue_max=0, environment="test")
    with LiveServer(settings) as live:

        def upload(_: int) -> httpx.Response:
            with live.client() as client, clip.open("rb") as f:
                return client.post("/identify", files={"file": (clip.name, f)})

        with concurrent.futures.ThreadPoolExecutor(8) as threads:
            responses = list(threads.map(upload, range(8)))
        statuses = sorted(r.status_code for r in responses)
        assert set(statuses) <= {200, 503}, [r.text for r in responses]
        assert 200 in statuses and 503 in statuses, statuses
        for busy in (r for r in responses if r.status_code == 503):
            assert busy.json()["error"]["code"] == "busy"
            assert 1 <= int(busy.headers["Retry-After"]) <= 60
            assert busy.headers["X-Request-ID"]
        # Refusals hold nothing: once the burst is over, an upload is taken again.
        assert upload(0).status_code == 200
        with live.client() as client:
            rejected = _value(
                _scrape(client), "songdetect_http_rejected_busy_total", route="/identify"
            )
        assert rejected >= statuses.count(503)


# --- the worker ---------------------------------------------------------------------------


def test_an_in_process_worker_reports_on_the_apis_readyz_and_metrics(
    aws, sqlite_url: str, catalogue: list[CatalogueSong]
) -> None:
    aws.notify_queue_on_upload()
    settings = aws.settings(sqlite_url, run_worker_in_api=True)
    with LiveServer(settings) as server, server.client() as client:
        before = _scrape(client)

        def moved(samples: dict, name: str, **labels: str) -> float:
            return _value(samples, name, **labels) - _value(before, name, **labels)

        aws.upload("songs_to_index/one.mp3", catalogue[0].path)
        # Done once the song's message is deleted: S3's test event may have come first.
        deadline = time.monotonic() + 30
        while True:
            after = _scrape(client)
            ready = client.get("/readyz").json()
            indexed = moved(after, "songdetect_index_results_total", outcome="created")
            if indexed and ready["worker"]["in_flight"] == 0:
                break
            assert time.monotonic() < deadline, "the in-process worker indexed nothing"
            time.sleep(0.2)
        # Scraped again once no message is in flight: the last scrape may have come just
        # before the message finished (and its counters moved).
        after = _scrape(client)
        assert client.get("/songs").json()["total"] == 1
    assert ready["status"] == "ready"
    assert ready["worker"]["status"] == "ok" and ready["worker"]["processed"] >= 1
    assert moved(after, "songdetect_worker_messages_received_total") >= 1
    assert moved(after, "songdetect_worker_messages_succeeded_total") >= 1
    assert moved(after, "songdetect_worker_message_age_seconds_count") >= 1
    assert moved(after, "songdetect_index_results_total", outcome="created") == 1


def test_the_standalone_worker_logs_message_ids_and_keys_and_serves_metrics(
    aws, sqlite_url: str, catalogue: list[CatalogueSong], tmp_path: Path
) -> None:
    port = free_port()
    env = _worker_env(aws, sqlite_url, port) | {"LOG_FORMAT": "json"}
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "worker"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        health = poll(f"http://127.0.0.1:{port}/healthz", 200, process, log_path)
        assert health.json()["status"] in ("ok", "starting")
        key = "songs_to_index/logged song.mp3"
        event = s3_event(aws.bucket, key, aws.upload(key, catalogue[1].path))
        message_id = aws.send(event)
        deadline = time.monotonic() + 60
        while '"message.done"' not in log_path.read_text():
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            assert process.poll() is None, log_path.read_text()[-3000:]
            time.sleep(0.2)
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert poll(f"http://127.0.0.1:{port}/readyz", 200, process, log_path)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert scraped.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(scraped.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    assert _value(samples, "songdetect_worker_messages_succeeded_total") == 1
    assert _value(samples, "songdetect_catalogue_songs") == 1
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    (index,) = [r for r in records if r.get("event") == "index.result"]
    assert index["s3_key"] == key and index["s3_bucket"] == aws.bucket
    (done,) = [r for r in records if r.get("event") == "message.done"]
    assert done["message_id"] == message_id
    assert index["message_id"] == message_id

"""LOG_FORMAT: one JSON object per line, or a readable line, each with the bound context."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from service.telemetry.logs import bound, configure_logging, request_bound


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_the_context_and_the_events_fields(restore_root: None) -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", out)
    log = logging.getLogger("service.test")
    with request_bound("req-1"):
        log.info("identified %d song(s)", 1, extra={"event": "identify.result", "songs": [3]})
        logging.getLogger("uvicorn.access").info(
            '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "POST", "/identify", "1.1", 200
        )
    with bound(message_id="m-9", s3_key="songs_to_index/a.mp3"):
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    log.debug("not at INFO")
    first, access, failed = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["message"] == "identified 1 song(s)" and first["level"] == "INFO"
    assert first["logger"] == "service.test" and first["timestamp"].endswith("+00:00")
    assert first["request_id"] == "req-1" and first["songs"] == [3]
    assert access["request_id"] == "req-1" and access["path"] == "/identify"
    assert access["status"] == 200 and access["elapsed_ms"] >= 0
    assert failed["message_id"] == "m-9" and "request_id" not in failed
    assert "ValueError: boom" in failed["exc_info"]


def test_text_lines_read_as_a_line_with_the_fields_after(restore_root: None) -> None:
    out = io.StringIO()
    configure_logging("INFO", "text", out)
    with bound(message_id="m-1"):
        logging.getLogger("service.test").warning("retrying", extra={"code": "store_unavailable"})
    (line,) = out.getvalue().splitlines()
    assert " WARNING service.test: retrying" in line
    assert line.endswith("code=store_unavailable message_id=m-1")
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)

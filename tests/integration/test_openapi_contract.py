"""The OpenAPI document says what the API does: a sample of bad requests to a real server get
exactly the statuses and error codes their operations document, in the documented ErrorOut
shape; operation ids are stable; /docs and /redoc work without a network."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.schemas import ErrorOut
from service.settings import Settings
from tests.audio_fixtures import SYNTH_RATE_HZ, encode
from tests.conftest import LiveServer

KEY = "contract-key"
ERROR_REF = "#/components/schemas/ErrorOut"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    folder = tmp_path_factory.mktemp("contract")
    settings = Settings(
        database_url=f"sqlite:///{folder / 'contract.sqlite3'}",
        cpu_workers=1,
        environment="test",
        api_key=KEY,
        upload_max_bytes=2_000_000,
    )
    with LiveServer(settings) as live:
        yield live


@pytest.fixture(scope="module")
def spec(server: LiveServer) -> dict:
    with server.client() as client:
        return client.get("/openapi.json").json()


def _operation(spec: dict, method: str, url: str) -> dict:
    """The operation whose path template matches `url`."""
    path = httpx.URL(url).path
    for template, operations in spec["paths"].items():
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
        if re.match(pattern, path) and method.lower() in operations:
            return operations[method.lower()]
    raise AssertionError(f"{method} {path} is not documented")


def _files(tmp: Path) -> dict[str, Path]:
    empty = tmp / "empty.mp3"
    empty.write_bytes(b"")
    text = tmp / "notes.mp3"
    text.write_text("definitely not audio\n" * 100)
    tone = np.zeros(SYNTH_RATE_HZ // 4, dtype=np.float32)
    short = encode(tone, tmp / "short", "wav")
    big = tmp / "big.wav"
    big.write_bytes(b"\0" * 3_000_000)
    return {"empty": empty, "text": text, "short": short, "big": big}


def _upload(path: Path) -> dict:
    return {"files": {"file": (path.name, path.read_bytes())}}


def test_every_bad_request_answers_a_documented_status_and_code(
    server: LiveServer, spec: dict, tmp_path: Path
) -> None:
    f = _files(tmp_path)
    keyed = {"X-API-Key": KEY}
    cases: list[tuple[str, str, dict, int, str]] = [
        ("POST", "/identify", {**_upload(f["empty"])}, 401, "unauthorized"),
        ("GET", "/songs", {}, 401, "unauthorized"),
        ("POST", "/identify", {**_upload(f["empty"]), "headers": keyed}, 400, "empty_file"),
        ("POST", "/identify", {**_upload(f["text"]), "headers": keyed}, 415, "not_audio"),
        ("POST", "/identify", {**_upload(f["short"]), "headers": keyed}, 422, "audio_too_short"),
        ("POST", "/identify", {"headers": keyed}, 422, "validation_error"),
        ("POST", "/songs", {**_upload(f["big"]), "headers": keyed}, 413, "payload_too_large"),
        ("POST", "/songs", {**_upload(f["text"]), "headers": keyed}, 415, "not_audio"),
        ("GET", "/songs?limit=0", {"headers": keyed}, 422, "validation_error"),
        ("GET", "/songs/abc", {"headers": keyed}, 422, "validation_error"),
        ("GET", "/songs/999999", {"headers": keyed}, 404, "not_found"),
        ("PATCH", "/songs/999999", {"json": {"title": "x"}, "headers": keyed}, 404, "not_found"),
        ("PATCH", "/songs/1", {"json": {"bogus": 1}, "headers": keyed}, 422, "validation_error"),
        ("DELETE", "/songs/999999", {"headers": keyed}, 404, "not_found"),
        ("GET", "/streams/nowhere/plays", {"headers": keyed}, 404, "not_found"),
        (
            "GET",
            "/streams/nowhere/plays?from=2025-01-02T00:00:00Z&to=2025-01-01T00:00:00Z",
            {"headers": keyed},
            400,
            "bad_request",
        ),
        ("GET", "/streams/nowhere/plays/1", {"headers": keyed}, 404, "not_found"),
    ]
    with server.client() as client:
        for method, url, kwargs, status, code in cases:
            response = client.request(method, url, **kwargs)
            where = f"{method} {url}"
            assert response.status_code == status, f"{where}: {response.text}"
            body = ErrorOut.model_validate(response.json())
            assert body.error.code == code, where
            documented = _operation(spec, method, url)["responses"]
            assert str(status) in documented, f"{where}: {status} undocumented"
            content = documented[str(status)]["content"]["application/json"]
            assert content["schema"]["$ref"] == ERROR_REF, where
            assert code in content["examples"], f"{where}: {code} undocumented"


def test_operations_have_stable_ids_and_no_framework_error_shape(spec: dict) -> None:
    ids = {
        f"{method.upper()} {path}": op["operationId"]
        for path, operations in spec["paths"].items()
        for method, op in operations.items()
    }
    assert ids["POST /identify"] == "identify"
    assert ids["POST /songs"] == "add_song"
    assert ids["GET /songs/{song_id}"] == "get_song"
    assert ids["GET /streams/{name}/plays"] == "list_plays"
    assert ids["GET /metrics"] == "metrics"
    assert len(set(ids.values())) == len(ids)
    assert all(re.fullmatch(r"[a-z][a-z_]*", i) for i in ids.values()), ids
    # FastAPI's own {"detail": [...]} shape is documented nowhere: the API never answers it.
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            for status, response in op["responses"].items():
                if status.startswith(("4", "5")):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": ERROR_REF}, f"{method} {path} {status}"


def test_public_models_describe_every_field(spec: dict) -> None:
    undocumented = [
        f"{name}.{field}"
        for name, schema in spec["components"]["schemas"].items()
        if not name.startswith("Body_")
        for field, prop in schema.get("properties", {}).items()
        if not prop.get("description")
    ]
    assert undocumented == []
    assert spec["components"]["schemas"]["IdentifyOut"]["examples"]


def test_docs_and_redoc_load_their_assets_from_the_service(server: LiveServer) -> None:
    with server.client() as client:
        for page in ("/docs", "/redoc"):
            html = client.get(page)
            assert html.status_code == 200
            sources = re.findall(r'(?:src|href)="([^"]+)"', html.text)
            assert sources, page
            for source in sources:
                assert not source.startswith(("http:", "https:", "//")), (page, source)
                if source.startswith("/docs-assets/"):
                    asset = client.get(source)
                    assert asset.status_code == 200 and len(asset.content) > 1000, source
        assert "SwaggerUIBundle" in client.get("/docs-assets/swagger-ui-bundle.js").text

"""The database is named one way: DATABASE_URL, or DB_HOST with its parts (ECS: the parts, the
user and password as secrets), or neither (embedded SQLite); anything else stops start-up."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

import pytest

from service.settings import Settings, default_database_url
from tests.deploy.wiring import ROOT

DB_VARIABLES = (
    "DATABASE_URL",
    "DB_HOST",
    "DB_PORT",
    "DB_NAME",
    "DB_USER",
    "DB_PASSWORD",
    "DB_SSLMODE",
    "DATABASE_READ_URL",
    "DB_READ_HOST",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*DB_VARIABLES, "ENVIRONMENT", "API_KEY"):
        monkeypatch.delenv(name, raising=False)


def settings() -> Settings:
    return Settings(_env_file=None)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "password",
    ["simple", "p@ss:w/rd#?", "with space%and+plus", "ünïcødé&=;,[]"],
    ids=["plain", "url-delimiters", "space-percent-plus", "non-ascii"],
)
def test_parts_compose_a_url_that_parses_back(
    monkeypatch: pytest.MonkeyPatch, password: str
) -> None:
    monkeypatch.setenv("DB_HOST", "cluster.cluster-abc.eu-west-1.rds.amazonaws.com")
    monkeypatch.setenv("DB_PORT", "6543")
    monkeypatch.setenv("DB_NAME", "songs")
    monkeypatch.setenv("DB_USER", "song@admin")
    monkeypatch.setenv("DB_PASSWORD", password)
    url = urlsplit(settings().database_url)
    assert url.scheme == "postgresql"
    assert url.hostname == "cluster.cluster-abc.eu-west-1.rds.amazonaws.com"
    assert url.port == 6543
    assert url.path == "/songs"
    assert unquote(url.username or "") == "song@admin"
    assert unquote(url.password or "") == password


def test_defaults_and_sslmode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_HOST", "db")
    monkeypatch.setenv("DB_SSLMODE", "require")
    s = settings()
    assert s.database_url == "postgresql://postgres@db:5432/songs?sslmode=require"
    assert not s.is_sqlite


POSTGRES_URL = "postgresql://a:b@elsewhere:5432/x"
SQLITE_URL = "sqlite:////tmp/elsewhere.sqlite3"
COMPOSED_URL = "postgresql://song:pw@db:6543/cat?sslmode=require"
PARTS = {
    "DB_PORT": "6543",
    "DB_NAME": "cat",
    "DB_USER": "song",
    "DB_PASSWORD": "pw",
    "DB_SSLMODE": "require",
}


@pytest.mark.parametrize(
    ("database_url", "db_host", "parts", "expected"),
    [
        # DATABASE_URL alone: used as it is, whatever its scheme.
        (POSTGRES_URL, None, {}, POSTGRES_URL),
        (SQLITE_URL, None, {}, SQLITE_URL),
        # DB_HOST alone or with its parts: composed.
        (None, "db", {}, "postgresql://postgres@db:5432/songs"),
        (None, "db", PARTS, COMPOSED_URL),
        # Neither: the embedded default.
        (None, None, {}, default_database_url()),
        # Both named: refused, whichever the scheme, with or without parts.
        (POSTGRES_URL, "db", {}, "DATABASE_URL and DB_HOST are both set"),
        (SQLITE_URL, "db", {}, "DATABASE_URL and DB_HOST are both set"),
        (POSTGRES_URL, "db", PARTS, "DATABASE_URL and DB_HOST are both set"),
        (SQLITE_URL, "db", PARTS, "DATABASE_URL and DB_HOST are both set"),
        # Parts without DB_HOST would be ignored: refused, with DATABASE_URL or alone.
        (POSTGRES_URL, None, PARTS, "set without DB_HOST"),
        (SQLITE_URL, None, PARTS, "set without DB_HOST"),
        (None, None, PARTS, "set without DB_HOST"),
        (None, None, {"DB_PASSWORD": "secret"}, "DB_PASSWORD set without DB_HOST"),
        # An empty variable counts as unset (an ECS or compose file may blank one).
        ("", "db", {}, "postgresql://postgres@db:5432/songs"),
        (POSTGRES_URL, "", {}, POSTGRES_URL),
        ("", "", {"DB_USER": ""}, default_database_url()),
    ],
    ids=[
        "url-postgres",
        "url-sqlite",
        "host",
        "host-parts",
        "nothing",
        "url-postgres-host",
        "url-sqlite-host",
        "url-postgres-host-parts",
        "url-sqlite-host-parts",
        "url-postgres-parts",
        "url-sqlite-parts",
        "parts",
        "password",
        "empty-url-host",
        "url-empty-host",
        "all-empty",
    ],
)
def test_precedence(
    monkeypatch: pytest.MonkeyPatch,
    database_url: str | None,
    db_host: str | None,
    parts: dict[str, str],
    expected: str,
) -> None:
    for name, value in {"DATABASE_URL": database_url, "DB_HOST": db_host, **parts}.items():
        if value is not None:
            monkeypatch.setenv(name, value)
    if "://" in expected:
        assert settings().database_url == expected
    else:
        with pytest.raises(ValueError, match=expected):
            settings()


def test_image_defaults_leave_the_database_to_the_environment() -> None:
    """The Dockerfile names no database, so the task definitions' DB_HOST is never ambiguous."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    for name in DB_VARIABLES:
        assert not re.search(rf"\b{name}=", dockerfile), f"the image sets {name}"


def test_password_is_not_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_HOST", "db")
    monkeypatch.setenv("DB_PASSWORD", "hunter2-secret")
    assert "hunter2-secret" not in repr(settings().db_password)


def test_production_accepts_composed_postgres_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """ECS passes only the parts; production must not mistake that for the SQLite default."""
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("API_KEY", "k" * 32)
    monkeypatch.setenv("DB_HOST", "db")
    monkeypatch.setenv("DB_USER", "song")
    monkeypatch.setenv("DB_PASSWORD", "pw")
    assert settings().database_url.startswith("postgresql://song:pw@db:5432/")


def test_bad_sslmode_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_HOST", "db")
    monkeypatch.setenv("DB_SSLMODE", "sometimes")
    with pytest.raises(ValueError, match="db_sslmode"):
        settings()


def test_production_refuses_the_embedded_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("API_KEY", "k" * 32)
    with pytest.raises(ValueError, match="needs PostgreSQL"):
        settings()


READ_URL = "postgresql://reader@replica:5432/x"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        # None: everything on the primary.
        ({"DB_HOST": "db"}, None),
        ({"DATABASE_URL": POSTGRES_URL, "DATABASE_READ_URL": ""}, None),
        # DATABASE_READ_URL as it is, whichever way the primary is named.
        ({"DATABASE_URL": POSTGRES_URL, "DATABASE_READ_URL": READ_URL}, READ_URL),
        ({"DB_HOST": "db", "DATABASE_READ_URL": READ_URL}, READ_URL),
        # DB_READ_HOST takes DB_HOST's parts (an Aurora reader endpoint shares them).
        ({"DB_HOST": "db", "DB_READ_HOST": "ro"}, "postgresql://postgres@ro:5432/songs"),
        (
            {"DB_HOST": "db", "DB_READ_HOST": "ro", **PARTS},
            "postgresql://song:pw@ro:6543/cat?sslmode=require",
        ),
        ({"DB_HOST": "db", "DB_READ_HOST": ""}, None),
        # Refused rather than guessed.
        (
            {"DB_HOST": "db", "DB_READ_HOST": "ro", "DATABASE_READ_URL": READ_URL},
            "DATABASE_READ_URL and DB_READ_HOST are both set",
        ),
        ({"DATABASE_URL": POSTGRES_URL, "DB_READ_HOST": "ro"}, "DB_READ_HOST set without DB_HOST"),
        ({"DB_READ_HOST": "ro"}, "DB_READ_HOST set without DB_HOST"),
        ({"DATABASE_READ_URL": READ_URL}, "needs a PostgreSQL primary"),
        ({"DATABASE_URL": SQLITE_URL, "DATABASE_READ_URL": READ_URL}, "needs a PostgreSQL primary"),
        (
            {"DATABASE_URL": POSTGRES_URL, "DATABASE_READ_URL": SQLITE_URL},
            "DATABASE_READ_URL must start with postgresql://",
        ),
    ],
    ids=[
        "none",
        "empty-read-url",
        "read-url",
        "host-read-url",
        "read-host",
        "read-host-parts",
        "empty-read-host",
        "both",
        "read-host-with-url",
        "read-host-alone",
        "read-url-sqlite-default",
        "read-url-sqlite",
        "read-url-sqlite-scheme",
    ],
)
def test_read_replica_naming(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str | None
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if expected is None or expected.startswith("postgresql://"):
        assert settings().database_read_url == expected
    else:
        with pytest.raises(ValueError, match=expected):
            settings()


def test_read_replica_password_is_not_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_HOST", "db")
    monkeypatch.setenv("DB_READ_HOST", "ro")
    monkeypatch.setenv("DB_PASSWORD", "p@ss/word")
    s = settings()
    assert unquote(urlsplit(s.database_read_url or "").password or "") == "p@ss/word"
    assert "p@ss" not in repr(s.db_password)

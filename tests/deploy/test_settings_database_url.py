"""DATABASE_URL composed from DB_HOST, DB_PORT, DB_NAME, DB_USER and DB_PASSWORD (ECS secrets)."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import pytest

from service.settings import DEFAULT_DATABASE_URL, Settings

DB_VARIABLES = ("DATABASE_URL", "DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASSWORD")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*DB_VARIABLES, "DB_SSLMODE", "ENVIRONMENT", "API_KEY"):
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


def test_database_url_wins_over_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://a:b@elsewhere:5432/x")
    monkeypatch.setenv("DB_HOST", "db")
    assert settings().database_url == "postgresql://a:b@elsewhere:5432/x"


def test_no_host_keeps_the_embedded_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_PASSWORD", "secret")
    assert settings().database_url == DEFAULT_DATABASE_URL


def test_password_is_not_shown(monkeypatch: pytest.MonkeyPatch) -> None:
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

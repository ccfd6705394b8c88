"""Real databases for tests: throw-away PostgreSQL databases and SQLite files.

PostgreSQL is migrated once per session into a template database; every test that asks for
one gets a clone (`CREATE DATABASE ... TEMPLATE`, a file copy on the server), so tests start
from the real schema without paying for the migrations again and never see each other's rows.
All databases carry a random prefix and are dropped at the end.

The PostgreSQL fixtures fail, never skip, when the server is unreachable: CI guarantees one,
and a silently skipped backend would be untested code.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from service.store.postgres import PostgresStore
from service.store.sqlite import SqliteStore

DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _run(coro: Coroutine[Any, Any, None]) -> None:
    """Run setup code on a private loop. Unlike asyncio.run, this leaves the thread's current
    event loop alone, which pytest-asyncio may have installed for async tests."""
    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        runner.run(coro)


def _with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


class PgDatabases:
    """Creates and drops the session's databases through the admin DSN."""

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        self.prefix = f"sdtest_{secrets.token_hex(4)}"
        self.template = f"{self.prefix}_tpl"
        self._count = 0
        self._live: set[str] = set()

    def _admin(self, *statements: str) -> None:
        async def run() -> None:
            conn = await asyncpg.connect(self.admin_dsn, timeout=10)
            try:
                for statement in statements:
                    await conn.execute(statement)
            finally:
                await conn.close()

        _run(run())

    def url(self, name: str) -> str:
        return _with_database(self.admin_dsn, name)

    def check_reachable(self) -> None:
        try:
            self._admin("SELECT 1")
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            pytest.fail(
                f"PostgreSQL is not reachable at {self.admin_dsn} ({exc!r}). The store tests "
                "need it: start it (`pg_ctlcluster --skip-systemctl-redirect 15 main start`, "
                "as .ci/run does) or point TEST_PG_ADMIN_DSN at a server with trust auth.",
                pytrace=False,
            )

    def build_template(self) -> None:
        self._admin(f'CREATE DATABASE "{self.template}"')
        self._live.add(self.template)

        # The real runner, so the template is exactly what `song-detection migrate` builds.
        async def migrate() -> None:
            await PostgresStore(self.url(self.template), "unused").migrate()

        _run(migrate())

    def _new_name(self) -> str:
        self._count += 1
        return f"{self.prefix}_{self._count}"

    def clone(self) -> str:
        """Name of a new database holding the migrated schema and no rows."""
        name = self._new_name()
        self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        self._live.add(name)
        return name

    def empty(self) -> str:
        """Name of a new database that has never been migrated."""
        name = self._new_name()
        self._admin(f'CREATE DATABASE "{name}"')
        self._live.add(name)
        return name

    def drop(self, name: str) -> None:
        # FORCE: a test that failed halfway may leave a pool or a server thread connected.
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._live.discard(name)

    def drop_all(self) -> None:
        for name in sorted(self._live):
            self.drop(name)


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[PgDatabases]:
    """The session's PostgreSQL server, with the migrated template built."""
    databases = PgDatabases(os.environ.get("TEST_PG_ADMIN_DSN") or DEFAULT_ADMIN_DSN)
    databases.check_reachable()
    try:
        databases.build_template()
        yield databases
    finally:
        databases.drop_all()


@pytest.fixture
def pg_url(pg_databases: PgDatabases) -> Iterator[str]:
    """URL of a fresh, migrated, empty PostgreSQL database."""
    name = pg_databases.clone()
    yield pg_databases.url(name)
    pg_databases.drop(name)


@pytest.fixture
def pg_empty_url(pg_databases: PgDatabases) -> Iterator[str]:
    """URL of a fresh PostgreSQL database that has never been migrated."""
    name = pg_databases.empty()
    yield pg_databases.url(name)
    pg_databases.drop(name)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once, copied by every test that wants a database."""
    path = tmp_path_factory.mktemp("sqlite_template") / "template.sqlite3"

    async def migrate() -> None:
        store = SqliteStore(path, "unused")
        try:
            await store.migrate()
        finally:
            await store.close()  # closing the last connection folds the WAL into the file

    _run(migrate())
    return path


def _sqlite_copy(template: Path, folder: Path) -> str:
    path = folder / "catalogue.sqlite3"
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    """URL of a fresh, migrated, empty SQLite file in the test's tmp_path."""
    return _sqlite_copy(sqlite_template, tmp_path)


@pytest.fixture(params=["postgres", "sqlite"])
def store_url(request: pytest.FixtureRequest) -> str:
    """A fresh, migrated, empty database of each backend in turn."""
    return request.getfixturevalue("pg_url" if request.param == "postgres" else "sqlite_url")


@pytest.fixture(scope="module", params=["postgres", "sqlite"])
def module_store_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Like store_url, but shared by a module's tests (for expensive setups such as a live
    server with an indexed catalogue)."""
    if request.param == "sqlite":
        template = request.getfixturevalue("sqlite_template")
        yield _sqlite_copy(template, tmp_path_factory.mktemp("module_sqlite"))
        return
    pg_databases: PgDatabases = request.getfixturevalue("pg_databases")
    name = pg_databases.clone()
    yield pg_databases.url(name)
    pg_databases.drop(name)

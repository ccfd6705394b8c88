"""Migrations and the index version in SQLite.

Each migration runs in its own write transaction (`BEGIN IMMEDIATE`), its statements one by
one so that nothing commits early; the fingerprint version recorded in `index_meta` makes a
catalogue refuse code that fingerprints differently.

SQLite's migrations carry PostgreSQL's numbers, with an empty file where SQLite has nothing to
do (0004_postings). A SQLite catalogue may have recorded three of its migrations in
`schema_migrations` under the lower numbers they had while SQLite's files were numbered
without that gap; those names are read as the current ones, so nothing is applied twice or
skipped, and `migrate` rewrites them.
"""

from __future__ import annotations

import logging
import sqlite3

from service.errors import IndexMismatch
from service.store.migrations import list_migrations
from service.store.sqlite.connection import SqliteBase, transaction

log = logging.getLogger(__name__)

#: Version names a SQLite catalogue may hold for its migrations 0005-0007, numbered 0004-0006
#: when SQLite's files had no 0004_postings. Same files, same SQL: only the names differ.
LEGACY_VERSIONS = {
    "0004_envelopes": "0005_envelopes",
    "0005_stream_envelopes": "0006_stream_envelopes",
    "0006_stream_sustained_peaks": "0007_stream_sustained_peaks",
}
#: The step SQLite has no use for; a catalogue that recorded any legacy name is past it.
NO_OP_VERSION = "0004_postings"

_CREATE_SCHEMA_MIGRATIONS = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version TEXT PRIMARY KEY,"
    " applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"
    ") STRICT"
)


def current_versions(recorded: set[str]) -> set[str]:
    """The migrations a catalogue has applied, in today's names, from what its
    `schema_migrations` records."""
    current = {LEGACY_VERSIONS.get(version, version) for version in recorded}
    if recorded & LEGACY_VERSIONS.keys():
        current.add(NO_OP_VERSION)
    return current


def _recorded(conn: sqlite3.Connection) -> set[str]:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone()
    if not exists:
        return set()
    return {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}


def split_statements(script: str) -> list[str]:
    """The statements of a SQL script, so that they can run inside our own transaction.

    `executescript` would commit any open transaction first, which defeats both the
    one-transaction-per-migration rule and the lock taken by BEGIN IMMEDIATE.
    `complete_statement` knows about string literals, comments and trigger bodies, so a `;`
    inside them does not split.
    """
    statements: list[str] = []
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            statements.append(buffer)
            buffer = ""
    # The final piece got a `;` it never had; anything but whitespace there is unterminated.
    if buffer.removesuffix(";").strip():
        raise ValueError(f"unterminated SQL statement: {buffer[:80]!r}")
    return statements


class SqliteSchema(SqliteBase):
    """Migrations, readiness and the index version check."""

    async def migrate(self) -> list[str]:
        return await self._run(self._migrate)

    def _migrate(self, conn: sqlite3.Connection) -> list[str]:
        """Each pending migration in its own write transaction; the done set is read again
        under the write lock, so a process migrating at the same time is never repeated."""
        migrations = list_migrations("sqlite", self._migrations_dir)
        self._rename_legacy_versions(conn)
        if not self._pending(conn):
            return []
        applied: list[str] = []
        for migration in migrations:
            with transaction(conn):
                conn.execute(_CREATE_SCHEMA_MIGRATIONS)
                done = conn.execute(
                    "SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)
                ).fetchone()
                if done:
                    continue
                for statement in split_statements(migration.sql()):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version) VALUES (?)", (migration.version,)
                )
            log.info("applied migration %s", migration.version)
            applied.append(migration.version)
        return applied

    def _rename_legacy_versions(self, conn: sqlite3.Connection) -> None:
        """Record legacy version names under today's, keeping when each was applied, and the
        no-op step they imply; one write transaction, so a concurrent migrate sees either."""
        if not _recorded(conn) & LEGACY_VERSIONS.keys():
            return
        with transaction(conn):
            legacy = sorted(_recorded(conn) & LEGACY_VERSIONS.keys())
            for old in legacy:
                conn.execute(
                    "INSERT OR IGNORE INTO schema_migrations (version, applied_at)"
                    " SELECT ?, applied_at FROM schema_migrations WHERE version = ?",
                    (LEGACY_VERSIONS[old], old),
                )
                conn.execute("DELETE FROM schema_migrations WHERE version = ?", (old,))
            if legacy:
                conn.execute(
                    "INSERT OR IGNORE INTO schema_migrations (version) VALUES (?)",
                    (NO_OP_VERSION,),
                )
        if legacy:
            log.info("renamed recorded migrations %s to today's numbering", ", ".join(legacy))

    def _pending(self, conn: sqlite3.Connection) -> list[str]:
        migrations = list_migrations("sqlite", self._migrations_dir)
        done = current_versions(_recorded(conn))
        return [m.version for m in migrations if m.version not in done]

    def _check_version(self, conn: sqlite3.Connection) -> None:
        """Record the fingerprint version in a new index; refuse an index built with another."""
        conn.execute(
            "INSERT INTO index_meta (key, value) VALUES ('fingerprint_version', ?)"
            " ON CONFLICT (key) DO NOTHING",
            (self._params_version,),
        )
        stored = conn.execute(
            "SELECT value FROM index_meta WHERE key = 'fingerprint_version'"
        ).fetchone()[0]
        if stored != self._params_version:
            raise IndexMismatch(
                f"the catalogue was built with fingerprint version {stored}, but this code "
                f"fingerprints with {self._params_version}; re-index into a new database or "
                "run the matching release"
            )
        self._version_checked = True

    async def stored_version(self) -> str | None:
        return await self._run(self._stored_version)

    def _stored_version(self, conn: sqlite3.Connection) -> str | None:
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'index_meta'"
        ).fetchone()
        if not exists:
            return None
        row = conn.execute(
            "SELECT value FROM index_meta WHERE key = 'fingerprint_version'"
        ).fetchone()
        return None if row is None else str(row[0])

    async def ready(self) -> bool:
        if await self._run(self._pending):
            return False
        if not self._version_checked:
            await self._run(self._check_version)
        return True

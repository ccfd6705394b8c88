"""Choosing the catalogue store from `DATABASE_URL` (and `DATABASE_READ_URL`).

The implementations are imported only when chosen, so a SQLite deployment never loads asyncpg.
"""

from __future__ import annotations

from pathlib import Path

from service.settings import Settings
from service.store.protocols import Store


def create_store(settings: Settings, params_version: str) -> Store:
    """An unopened store for `settings.database_url`; `params_version` is the index format
    the caller fingerprints with (`FingerprintParams.version`)."""
    if settings.is_sqlite:
        from service.store.sqlite import SqliteStore

        path = settings.sqlite_path
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        return SqliteStore(
            path,
            params_version,
            migrate_on_start=settings.migrate_on_start,
            busy_timeout_s=settings.db_command_timeout_s,
        )
    from service.store.postgres import PostgresStore

    return PostgresStore(
        settings.database_url,
        params_version,
        migrate_on_start=settings.migrate_on_start,
        pool_min_size=settings.db_pool_min_size,
        pool_max_size=settings.db_pool_max_size,
        command_timeout_s=settings.db_command_timeout_s,
        stall_timeout_s=settings.db_stall_timeout_s,
        compact_delta_rows=settings.compact_delta_rows,
        read_dsn=settings.database_read_url,
    )

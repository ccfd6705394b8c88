"""The SQS worker's idempotency ledger in SQLite: one row per processed object version."""

from __future__ import annotations

import sqlite3
from datetime import datetime

from service.store.columns import PROCESSED_COLUMNS
from service.store.records import ProcessedObject
from service.store.sqlite.connection import NOW, SqliteBase, transaction


def _processed(row: sqlite3.Row) -> ProcessedObject:
    values = dict(zip(row.keys(), row, strict=True))
    for name in ("created_at", "claimed_at", "published_at"):
        if values[name] is not None:
            values[name] = datetime.fromisoformat(values[name])
    return ProcessedObject(**values)


class SqliteLedger(SqliteBase):
    """The processed-objects ledger; rows are never deleted by the service."""

    async def get_processed(
        self, bucket: str, key: str, version_token: str
    ) -> ProcessedObject | None:
        return await self._run(self._get_processed, bucket, key, version_token)

    def _get_processed(
        self, conn: sqlite3.Connection, bucket: str, key: str, version_token: str
    ) -> ProcessedObject | None:
        row = conn.execute(
            f"SELECT {PROCESSED_COLUMNS} FROM processed_objects"
            " WHERE bucket = ? AND key = ? AND version_token = ?",
            (bucket, key, version_token),
        ).fetchone()
        return None if row is None else _processed(row)

    async def record_processed(
        self, bucket: str, key: str, version_token: str, kind: str, result_json: str
    ) -> tuple[ProcessedObject, bool]:
        return await self._run(
            self._record_processed, bucket, key, version_token, kind, result_json
        )

    def _record_processed(
        self,
        conn: sqlite3.Connection,
        bucket: str,
        key: str,
        version_token: str,
        kind: str,
        result_json: str,
    ) -> tuple[ProcessedObject, bool]:
        with transaction(conn):
            rows = conn.execute(
                "INSERT INTO processed_objects (bucket, key, version_token, kind, result_json)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
                f" RETURNING {PROCESSED_COLUMNS}",
                (bucket, key, version_token, kind, result_json),
            ).fetchall()
            if rows:
                return _processed(rows[0]), True
            # The write lock is held, so the conflicting row is there.
            existing = self._get_processed(conn, bucket, key, version_token)
        assert existing is not None
        return existing, False

    async def claim_publication(
        self, bucket: str, key: str, version_token: str, lease_s: float
    ) -> bool:
        return await self._run(self._claim_publication, bucket, key, version_token, lease_s)

    def _claim_publication(
        self, conn: sqlite3.Connection, bucket: str, key: str, version_token: str, lease_s: float
    ) -> bool:
        rows = conn.execute(
            f"UPDATE processed_objects SET claimed_at = {NOW}"
            " WHERE bucket = ? AND key = ? AND version_token = ? AND published_at IS NULL"
            " AND claimed_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?)"
            " RETURNING 1",
            (bucket, key, version_token, f"-{float(lease_s):.3f} seconds"),
        ).fetchall()
        return bool(rows)

    async def mark_published(self, bucket: str, key: str, version_token: str) -> None:
        await self._run(self._mark_published, bucket, key, version_token)

    def _mark_published(
        self, conn: sqlite3.Connection, bucket: str, key: str, version_token: str
    ) -> None:
        conn.execute(
            f"UPDATE processed_objects SET published_at = {NOW}"
            " WHERE bucket = ? AND key = ? AND version_token = ? AND published_at IS NULL",
            (bucket, key, version_token),
        )

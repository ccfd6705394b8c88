"""The SQS worker's idempotency ledger in PostgreSQL: one row per processed object version."""

from __future__ import annotations

from service.errors import StoreUnavailable
from service.store.columns import PROCESSED_COLUMNS
from service.store.postgres.connection import PostgresBase
from service.store.records import ProcessedObject


class PostgresLedger(PostgresBase):
    """The processed-objects ledger; rows are never deleted by the service."""

    async def get_processed(
        self, bucket: str, key: str, version_token: str
    ) -> ProcessedObject | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(
                f"SELECT {PROCESSED_COLUMNS} FROM processed_objects"
                " WHERE bucket = $1 AND key = $2 AND version_token = $3",
                bucket,
                key,
                version_token,
            )
        return None if row is None else ProcessedObject(**dict(row))

    async def record_processed(
        self, bucket: str, key: str, version_token: str, kind: str, result_json: str
    ) -> tuple[ProcessedObject, bool]:
        async with self._connection() as conn:
            # ON CONFLICT waits for a concurrent insert of the same key to commit, so of two
            # workers finishing the same redelivered event exactly one becomes the publisher.
            row = await conn.fetchrow(
                "INSERT INTO processed_objects (bucket, key, version_token, kind, result_json)"
                " VALUES ($1, $2, $3, $4, $5::json) ON CONFLICT DO NOTHING"
                f" RETURNING {PROCESSED_COLUMNS}",
                bucket,
                key,
                version_token,
                kind,
                result_json,
            )
            if row is not None:
                return ProcessedObject(**dict(row)), True
            existing = await conn.fetchrow(
                f"SELECT {PROCESSED_COLUMNS} FROM processed_objects"
                " WHERE bucket = $1 AND key = $2 AND version_token = $3",
                bucket,
                key,
                version_token,
            )
        if existing is None:  # ledger rows are never deleted by the service
            raise StoreUnavailable("ledger row vanished concurrently; retry")
        return ProcessedObject(**dict(existing)), False

    async def claim_publication(
        self, bucket: str, key: str, version_token: str, lease_s: float
    ) -> bool:
        async with self._connection() as conn:
            claimed = await conn.fetchval(
                "UPDATE processed_objects SET claimed_at = now()"
                " WHERE bucket = $1 AND key = $2 AND version_token = $3"
                " AND published_at IS NULL"
                " AND claimed_at < now() - make_interval(secs => $4)"
                " RETURNING true",
                bucket,
                key,
                version_token,
                float(lease_s),
            )
        return bool(claimed)

    async def mark_published(self, bucket: str, key: str, version_token: str) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "UPDATE processed_objects SET published_at = now()"
                " WHERE bucket = $1 AND key = $2 AND version_token = $3"
                " AND published_at IS NULL",
                bucket,
                key,
                version_token,
            )

-- The SQS worker's idempotency ledger (see migrations/postgres/0002_worker.sql).
CREATE TABLE processed_objects (
    bucket        TEXT NOT NULL,
    key           TEXT NOT NULL,
    version_token TEXT NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('index', 'identify', 'stream_segment')),
    result_json   TEXT NOT NULL CHECK (json_valid(result_json)),
    -- ISO 8601 in UTC with a Z: compares correctly as text.
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    claimed_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    published_at  TEXT,
    PRIMARY KEY (bucket, key, version_token)
) STRICT;

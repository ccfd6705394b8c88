-- The SQS worker's idempotency ledger: one row per uploaded object version it has processed.
-- SQS delivers at least once; a redelivered event finds its row and neither indexes, reports
-- nor publishes again. The row is written once the work is done (result_json is the report),
-- claimed_at is the lease of whoever publishes it, published_at is set once the report is in
-- S3 and the SNS message sent.
CREATE TABLE processed_objects (
    bucket        text NOT NULL,
    key           text NOT NULL,
    -- 'v:<versionId>', 's:<sequencer>' or 'e:<etag>' (service/aws/events.py).
    version_token text NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('index', 'identify', 'stream_segment')),
    -- json, not jsonb: kept byte for byte, so a report re-published after a crash is the same.
    result_json   json NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    claimed_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz,
    PRIMARY KEY (bucket, key, version_token)
);

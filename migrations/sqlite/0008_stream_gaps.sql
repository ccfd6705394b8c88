-- Stream health: each live stream's outages (see migrations/postgres/0008_stream_gaps.sql).
CREATE TABLE stream_gaps (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    stream_id         INTEGER NOT NULL REFERENCES streams (id) ON DELETE CASCADE,
    from_s            REAL NOT NULL,
    to_s              REAL CHECK (to_s IS NULL OR to_s >= from_s),
    created_at        TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    down_published_at TEXT,
    up_published_at   TEXT
) STRICT;
CREATE UNIQUE INDEX stream_gaps_open_idx ON stream_gaps (stream_id) WHERE to_s IS NULL;
CREATE INDEX stream_gaps_stream_idx ON stream_gaps (stream_id, from_s);

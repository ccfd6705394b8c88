-- Live streams (see migrations/postgres/0003_streams.sql). Times are ISO 8601 UTC text with
-- a Z, which compares correctly as text.
CREATE TABLE streams (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    name            TEXT NOT NULL UNIQUE CHECK (name <> ''),
    pts_epoch_s     REAL NOT NULL,
    wall_origin     TEXT NOT NULL,
    max_end_s       REAL NOT NULL,
    last_sequence   INTEGER NOT NULL,
    last_key        TEXT NOT NULL,
    last_segment_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;

CREATE TABLE stream_segments (
    stream_id   INTEGER NOT NULL REFERENCES streams (id) ON DELETE CASCADE,
    sequence    INTEGER NOT NULL,
    key         TEXT NOT NULL,
    start_s     REAL NOT NULL,
    duration_s  REAL NOT NULL,
    pts_s       REAL,
    n_frames    INTEGER NOT NULL,
    peaks       BLOB NOT NULL,
    received_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (stream_id, sequence)
) STRICT;
CREATE INDEX stream_segments_start_idx ON stream_segments (stream_id, start_s);

CREATE TABLE stream_windows (
    stream_id    INTEGER NOT NULL REFERENCES streams (id) ON DELETE CASCADE,
    window_index INTEGER NOT NULL,
    matches      TEXT NOT NULL CHECK (json_valid(matches)),
    updated_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (stream_id, window_index)
) STRICT;

CREATE TABLE stream_plays (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    stream_id    INTEGER NOT NULL REFERENCES streams (id) ON DELETE CASCADE,
    song_id      INTEGER NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('playing', 'ended', 'retracted')),
    start_s      REAL NOT NULL,
    end_s        REAL NOT NULL CHECK (end_s >= start_s),
    song_start_s REAL NOT NULL,
    song_end_s   REAL NOT NULL,
    speed        REAL NOT NULL,
    score        INTEGER NOT NULL,
    confidence   REAL NOT NULL,
    windows      INTEGER NOT NULL,
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;
CREATE INDEX stream_plays_start_idx ON stream_plays (stream_id, start_s);

CREATE TABLE stream_events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    stream_id    INTEGER NOT NULL REFERENCES streams (id) ON DELETE CASCADE,
    play_id      INTEGER NOT NULL REFERENCES stream_plays (id) ON DELETE CASCADE,
    event_type   TEXT NOT NULL CHECK (event_type IN ('play.started', 'play.updated', 'play.ended')),
    payload      TEXT NOT NULL CHECK (json_valid(payload)),
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    published_at TEXT
) STRICT;
CREATE UNIQUE INDEX stream_events_once_idx ON stream_events (play_id, event_type)
    WHERE event_type IN ('play.started', 'play.ended');
CREATE INDEX stream_events_pending_idx ON stream_events (stream_id, id) WHERE published_at IS NULL;

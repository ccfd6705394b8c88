-- The catalogue: songs, their landmark hashes, and what the index was built with.
-- schema_migrations is created by the runner (service/store/migrations.py), not here.

-- AUTOINCREMENT so that the id of a deleted song is never handed to another one (a client may
-- still hold it), as with the PostgreSQL identity column.
CREATE TABLE songs (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    title             TEXT NOT NULL CHECK (title <> ''),
    artist            TEXT,
    album             TEXT,
    isrc              TEXT,
    external_id       TEXT,
    duration_s        REAL NOT NULL,
    n_frames          INTEGER NOT NULL,
    content_sha256    TEXT NOT NULL UNIQUE,
    fingerprint_count INTEGER NOT NULL DEFAULT 0,
    -- ISO 8601 in UTC with a Z, which datetime.fromisoformat reads back as an aware datetime.
    created_at        TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;

-- Clustered on the lookup key: a lookup reads (song_id, frame) from the same b-tree pages
-- it searches. The key makes rows unique, so the store deduplicates before inserting.
CREATE TABLE fingerprints (
    hash    INTEGER NOT NULL,
    song_id INTEGER NOT NULL,
    frame   INTEGER NOT NULL,
    PRIMARY KEY (hash, song_id, frame)
) STRICT, WITHOUT ROWID;

CREATE INDEX fingerprints_song_id_idx ON fingerprints (song_id);

CREATE TABLE index_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

-- The catalogue: songs, their landmark hashes, and what the index was built with.
-- schema_migrations is created by the runner (service/store/migrations.py), not here.

CREATE TABLE songs (
    id                integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    title             text NOT NULL CHECK (title <> ''),
    artist            text,
    album             text,
    isrc              text,
    external_id       text,
    duration_s        double precision NOT NULL,
    -- Length in STFT frames; the matcher's chance model needs it per candidate song.
    n_frames          integer NOT NULL,
    -- Digest of the decoded audio: the same recording is never indexed twice.
    content_sha256    text NOT NULL UNIQUE,
    fingerprint_count integer NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now()
);

-- No foreign key: a song's rows are written and deleted in the same transaction as the song,
-- and a per-row FK check would slow the COPY that loads tens of thousands of rows per song.
CREATE TABLE fingerprints (
    hash    integer NOT NULL,
    song_id integer NOT NULL,
    frame   integer NOT NULL
);

-- Lookups read (song_id, frame) straight from the index (index-only scan, no heap visit).
CREATE INDEX fingerprints_hash_idx ON fingerprints (hash) INCLUDE (song_id, frame);

-- Rows arrive one song at a time, so song_id follows the physical order and a tiny BRIN
-- index finds a song's pages for deletion without a second large btree to maintain.
CREATE INDEX fingerprints_song_id_brin ON fingerprints USING brin (song_id);

-- Facts about the index as a whole, e.g. fingerprint_version (FingerprintParams.version).
CREATE TABLE index_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

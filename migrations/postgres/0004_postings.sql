-- The postings layout: one row per distinct hash holding every (song_id, frame) stored under it.
--
-- A row per fingerprint costs ~28 bytes of tuple header and item pointer plus ~20 bytes of
-- index entry before its 12 bytes of data (58 MB per hour of audio); a row per hash pays that
-- once for all its postings, packed 6 bytes each (service/store/postings.py: 24-bit song id and
-- 24-bit frame, big-endian, so SQL can pack them with substring(int4send(x) from 2)).
--
-- `fingerprints` stays, as the delta: a new song is one COPY into it, in the song's
-- transaction, and compaction (PostgresStore.compact) moves the delta into fp_postings in
-- one transaction. Lookups read both in one statement. `hash` is the only key, so the table
-- can be distributed by it (Citus) or hash-partitioned later without changing a query.
--
-- Replicas running code older than this migration read `fingerprints` only: stop them before
-- applying it, or they stop finding songs once they are compacted.

CREATE TABLE fp_postings (
    hash     integer PRIMARY KEY,
    postings bytea NOT NULL
);

-- Postings of random song ids and frames barely compress: skip pglz on every rewrite, and let
-- substring() fetch only the TOAST chunks it needs.
ALTER TABLE fp_postings ALTER COLUMN postings SET STORAGE EXTERNAL;

-- Deleted songs whose postings are still in fp_postings. Lookups drop their postings;
-- compaction with purge removes them, then the tombstone.
CREATE TABLE fp_tombstones (
    song_id integer PRIMARY KEY
);

-- Convert what is already stored. 24 bits must hold every id and frame; refuse rather than
-- truncate.
DO $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM fingerprints
        WHERE song_id NOT BETWEEN 0 AND 16777215 OR frame NOT BETWEEN 0 AND 16777215
    ) THEN
        RAISE EXCEPTION 'fingerprints hold a song id or frame beyond 24 bits; cannot convert';
    END IF;
END
$$;

-- Orphan rows (no song) were never returned by lookups; they are not carried over.
INSERT INTO fp_postings (hash, postings)
SELECT f.hash,
       string_agg(substring(int4send(f.song_id) from 2) || substring(int4send(f.frame) from 2),
                  ''::bytea ORDER BY f.song_id, f.frame)
FROM fingerprints f
WHERE EXISTS (SELECT 1 FROM songs s WHERE s.id = f.song_id)
GROUP BY f.hash;

TRUNCATE fingerprints;

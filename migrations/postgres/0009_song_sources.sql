-- Where each song's audio came from (a file path or an s3:// URI) and the SHA-256 of that file,
-- so that a bulk import can skip what it indexed already and `song-detection reindex` can
-- rebuild the catalogue from the originals under other fingerprint parameters. Songs indexed
-- before this migration have neither (NULL): nothing is known of their origin.
ALTER TABLE songs ADD COLUMN source text, ADD COLUMN file_sha256 text;

CREATE INDEX songs_source_idx ON songs (source) WHERE source IS NOT NULL;

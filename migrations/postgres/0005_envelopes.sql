-- Band envelopes of each song (service/audio/envelopes.py): int8 levels, frame-major, `bands`
-- per frame. Read only for the few candidates of a clip the landmarks leave undecided, a range
-- of frames at a time (substring() of an EXTERNAL value reads only the TOAST chunks needed).
-- Songs indexed before this migration have none; their landmarks still match as before.
CREATE TABLE song_envelopes (
    song_id  integer PRIMARY KEY REFERENCES songs (id) ON DELETE CASCADE,
    format   smallint NOT NULL,
    bands    smallint NOT NULL CHECK (bands > 0),
    envelope bytea NOT NULL
);

ALTER TABLE song_envelopes ALTER COLUMN envelope SET STORAGE EXTERNAL;

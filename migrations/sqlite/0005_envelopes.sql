-- Band envelopes of each song (service/audio/envelopes.py): int8 levels, frame-major, `bands`
-- per frame, read a range of frames at a time for the few candidates of an undecided clip.
-- Songs indexed before this migration have none; their landmarks still match as before.
CREATE TABLE song_envelopes (
    song_id  INTEGER PRIMARY KEY REFERENCES songs (id) ON DELETE CASCADE,
    format   INTEGER NOT NULL,
    bands    INTEGER NOT NULL CHECK (bands > 0),
    envelope BLOB NOT NULL
) STRICT;

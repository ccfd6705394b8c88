-- Band envelopes of each stream segment (service/audio/envelopes.py), beside its peaks, so a
-- stream's windows are checked against the songs' envelopes as clips are: int8 levels,
-- frame-major, `envelope_bands` per frame. Segments stored before this migration have none
-- (format 0); their windows are matched by landmarks alone.
ALTER TABLE stream_segments ADD COLUMN envelope_format INTEGER NOT NULL DEFAULT 0;
ALTER TABLE stream_segments ADD COLUMN envelope_bands INTEGER NOT NULL DEFAULT 0;
ALTER TABLE stream_segments ADD COLUMN envelope BLOB NOT NULL DEFAULT x'';

-- Whether a play has been announced (its `play.started` written to the outbox). The log holds
-- a play as soon as its windows support it; it is announced only once no segment still to
-- come can undo it (core/streams/announce.py). Plays logged before this column existed were
-- announced when they were created.
ALTER TABLE stream_plays ADD COLUMN announced INTEGER NOT NULL DEFAULT 0 CHECK (announced IN (0, 1));
UPDATE stream_plays SET announced = 1;
-- Seconds around a play's start (end) during which the previous (next) song was identified
-- too: a crossfade's overlap, stated beside the one boundary the log gives it.
ALTER TABLE stream_plays ADD COLUMN overlap_in_s REAL NOT NULL DEFAULT 0;
ALTER TABLE stream_plays ADD COLUMN overlap_out_s REAL NOT NULL DEFAULT 0;
CREATE INDEX stream_plays_unannounced_idx ON stream_plays (stream_id)
    WHERE NOT announced AND status <> 'retracted';

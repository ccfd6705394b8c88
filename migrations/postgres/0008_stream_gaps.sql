-- Stream health: the outages of each live stream, holes of at least STREAM_DOWN_AFTER_S in
-- its segments' coverage of the stream clock. `to_s` is null while the stream is down (the
-- one open gap per stream, found by the worker's sweeper on the wall clock). Each gap is
-- announced once as stream.down and once as stream.up: the two published_at columns are the
-- outbox of those SNS events.
CREATE TABLE stream_gaps (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id         integer NOT NULL REFERENCES streams (id) ON DELETE CASCADE,
    from_s            double precision NOT NULL,
    to_s              double precision CHECK (to_s IS NULL OR to_s >= from_s),
    created_at        timestamptz NOT NULL DEFAULT now(),
    down_published_at timestamptz,
    up_published_at   timestamptz
);
CREATE UNIQUE INDEX stream_gaps_open_idx ON stream_gaps (stream_id) WHERE to_s IS NULL;
CREATE INDEX stream_gaps_stream_idx ON stream_gaps (stream_id, from_s);
CREATE INDEX stream_gaps_pending_idx ON stream_gaps (id)
    WHERE down_published_at IS NULL OR (to_s IS NOT NULL AND up_published_at IS NULL);

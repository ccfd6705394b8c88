-- Live streams (MediaLive archive segments): per-segment peaks and window matches kept for a
-- while, the airplay log derived from them, and an outbox of play events for SNS.

CREATE TABLE streams (
    id              integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text NOT NULL UNIQUE CHECK (name <> ''),
    -- Reference for unwrapping the 33-bit MPEG-TS clock (PTS - sequence x segment length,
    -- from the first segment processed); any segment of the stream gives the same times.
    pts_epoch_s     double precision NOT NULL,
    -- UTC wall clock at stream time 0, fixed by the first segment processed.
    wall_origin     timestamptz NOT NULL,
    -- Latest segment end on the stream clock, and the segment that reached it.
    max_end_s       double precision NOT NULL,
    last_sequence   bigint NOT NULL,
    last_key        text NOT NULL,
    -- Wall-clock time a segment of this stream was last processed (the play-end timeout).
    last_segment_at timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE stream_segments (
    stream_id   integer NOT NULL REFERENCES streams (id) ON DELETE CASCADE,
    sequence    bigint NOT NULL,
    key         text NOT NULL,
    -- Place on the stream clock (s) of the first decoded sample, and the audio's length.
    start_s     double precision NOT NULL,
    duration_s  double precision NOT NULL,
    -- Audio PTS as read from the TS (null when the container had none).
    pts_s       double precision,
    n_frames    integer NOT NULL,
    -- Query-density landmark peaks (frame int32, bin int16, prominence float32, little end).
    peaks       bytea NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, sequence)
);
CREATE INDEX stream_segments_start_idx ON stream_segments (stream_id, start_s);

-- Matches of the stream's fixed grid of windows (window_index x hop on the stream clock).
CREATE TABLE stream_windows (
    stream_id    integer NOT NULL REFERENCES streams (id) ON DELETE CASCADE,
    window_index bigint NOT NULL,
    matches      json NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, window_index)
);

-- The airplay log. No foreign key to songs: the log outlives a deleted song.
CREATE TABLE stream_plays (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id    integer NOT NULL REFERENCES streams (id) ON DELETE CASCADE,
    song_id      integer NOT NULL,
    status       text NOT NULL CHECK (status IN ('playing', 'ended', 'retracted')),
    start_s      double precision NOT NULL,
    end_s        double precision NOT NULL CHECK (end_s >= start_s),
    song_start_s double precision NOT NULL,
    song_end_s   double precision NOT NULL,
    speed        double precision NOT NULL,
    score        integer NOT NULL,
    confidence   double precision NOT NULL,
    windows      integer NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stream_plays_start_idx ON stream_plays (stream_id, start_s);

-- Outbox: written in the transaction that changes the log, published to SNS afterwards.
CREATE TABLE stream_events (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id    integer NOT NULL REFERENCES streams (id) ON DELETE CASCADE,
    play_id      bigint NOT NULL REFERENCES stream_plays (id) ON DELETE CASCADE,
    event_type   text NOT NULL CHECK (event_type IN ('play.started', 'play.updated', 'play.ended')),
    payload      json NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
-- A play starts and ends once, whatever the redeliveries.
CREATE UNIQUE INDEX stream_events_once_idx ON stream_events (play_id, event_type)
    WHERE event_type IN ('play.started', 'play.ended');
CREATE INDEX stream_events_pending_idx ON stream_events (stream_id, id) WHERE published_at IS NULL;


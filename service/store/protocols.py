"""What callers need from a store, split by use.

`CatalogueStore` is the songs and their fingerprints and envelopes (indexing, identifying,
the catalogue API); `IngestLedger` is the worker's record of the S3 objects it has
processed; `StreamLog` is the live streams' segments, windows, plays and events. `Store` is
all three plus the lifecycle: both backends implement it, and a caller asks for the narrowest
part it uses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Literal, Protocol

import numpy as np

from service.store.play_report import PlayReportQuery, PlayReportRow
from service.store.records import (
    CompactionResult,
    EnvelopeRange,
    EnvelopeSlice,
    Hits,
    NewSong,
    NewStream,
    Play,
    PlayPage,
    ProcessedObject,
    Song,
    SongPage,
    StoreStats,
    StreamEvent,
    StreamGap,
    StreamSegment,
    StreamState,
    StreamUpdate,
    StreamWindow,
)


class CatalogueStore(Protocol):
    """Songs, their fingerprints and band envelopes: what indexing and identifying use."""

    async def add_song(self, song: NewSong) -> tuple[Song, bool]:
        """Insert song and fingerprints atomically; (existing, False) if the content is known."""

    async def find_by_content(self, content_sha256: str) -> Song | None: ...

    async def find_by_source(self, source: str) -> Song | None:
        """The first song indexed from `source` (a path or an s3:// URI), if any."""

    async def songs_after(self, after_id: int, limit: int) -> list[Song]:
        """Up to `limit` songs with ids above `after_id`, by id: the whole catalogue page by
        page, whatever is added or deleted meanwhile."""

    async def highest_song_id(self) -> int:
        """The highest song id ever handed out, deleted songs' included (0: none yet)."""

    async def sync_song_ids(self, at_least: int = 0) -> None:
        """After songs were added under explicit ids (NewSong.song_id), make the next new
        song's id follow the highest one, and `at_least` (ids a rebuilt catalogue had)."""

    async def lookup(
        self, hashes: np.ndarray, max_postings: int | None = None, max_hits: int | None = None
    ) -> Hits:
        """Every stored fingerprint whose hash is in `hashes` (int32 array), in one round trip;
        hashes stored more than `max_postings` times are left out whole (see
        MatchParams.frequent_hash_factor), and so are the most frequent of the rest when they
        hold more than `max_hits` postings in all (see service.store.rules.kept_hashes): those
        are the hits' `left_out`, with their postings and the catalogue's frames."""

    async def fingerprint_total(self) -> int:
        """About how many fingerprints the catalogue holds (at most a minute old), to scale
        the frequent-hash cap with the catalogue."""

    async def get_song(self, song_id: int) -> Song | None: ...

    async def get_songs(self, song_ids: list[int]) -> dict[int, Song]: ...

    async def set_song_envelope(
        self, song_id: int, envelope: np.ndarray, envelope_format: int
    ) -> None:
        """Store a song's band envelopes unless it has some of this format already (songs
        indexed before envelopes existed get them when their audio is indexed again); a
        song that no longer exists is left alone."""

    async def song_envelopes(
        self, ranges: list[EnvelopeRange], envelope_format: int
    ) -> dict[int, EnvelopeSlice]:
        """The asked frames of each song's band envelopes, in one round trip; songs with no
        envelope of `envelope_format` are left out."""

    async def list_songs(self, limit: int, offset: int, query: str | None = None) -> SongPage:
        """Songs by id; `query` filters case-insensitively on title, artist, album, isrc,
        external_id."""

    async def update_song(self, song_id: int, fields: dict[str, str | None]) -> Song | None:
        """Change editable metadata (keys from EDITABLE_FIELDS); None if the song is unknown."""

    async def delete_song(self, song_id: int) -> bool:
        """Remove a song and all its fingerprints; False if it did not exist."""

    async def stats(self) -> StoreStats: ...

    async def optimize(self) -> None:
        """Compact (with purge) and refresh planner statistics after a bulk load.

        Without statistics a freshly loaded catalogue looks empty to the planner, which then
        scans whole tables for every lookup instead of using the index.
        """

    async def compact(self, purge: bool = False, wait: bool = True) -> CompactionResult:
        """Fold recently added fingerprints into the compact index; `purge` also reclaims
        the space of deleted songs. Lookups give the same answers before and after, and
        adds, deletes and lookups may run meanwhile. `wait=False` returns at once (skipped)
        when another process is compacting."""


class IngestLedger(Protocol):
    """The SQS worker's idempotency ledger: one row per uploaded object version processed."""

    async def get_processed(
        self, bucket: str, key: str, version_token: str
    ) -> ProcessedObject | None:
        """The ledger row of this object version, if it was processed."""

    async def record_processed(
        self, bucket: str, key: str, version_token: str, kind: str, result_json: str
    ) -> tuple[ProcessedObject, bool]:
        """Insert the row unless one exists; (row, True) when this call inserted it, which
        makes the caller the publisher (its claim starts now), else (existing row, False)."""

    async def claim_publication(
        self, bucket: str, key: str, version_token: str, lease_s: float
    ) -> bool:
        """Take over publishing an unpublished row whose claim is older than `lease_s` (its
        publisher died); True if this call now holds the claim."""

    async def mark_published(self, bucket: str, key: str, version_token: str) -> None:
        """Record that the row's report and SNS message are out."""


class StreamLog(Protocol):
    """Live streams: their segments, window matches, airplay log and outbox of events."""

    def stream_lock(self, name: str) -> AbstractAsyncContextManager[None]:
        """Held while a stream's log is recomputed: one holder per stream name at a time,
        across processes (PostgreSQL advisory lock) or within the process (SQLite)."""

    async def get_stream(self, name: str) -> StreamState | None: ...

    async def ensure_stream(self, stream: NewStream) -> StreamState:
        """The stream named `stream.name`, created from `stream` if it does not exist yet."""

    async def list_streams(self) -> list[StreamState]: ...

    async def stream_segments(
        self, stream_id: int, start_from_s: float, start_to_s: float
    ) -> list[StreamSegment]:
        """Segments whose start lies in [start_from_s, start_to_s], by start."""

    async def stream_windows(
        self, stream_id: int, first_index: int, last_index: int
    ) -> list[StreamWindow]:
        """Stored window matches with first_index <= index <= last_index, by index."""

    async def segment_spans(
        self, stream_id: int, from_s: float, to_s: float
    ) -> list[tuple[int, float, float]]:
        """(sequence, start_s, end_s) of the stored segments overlapping [from_s, to_s], by
        start: what of the stream has arrived, without the segments' peaks."""

    async def unannounced_plays(self, stream_id: int) -> list[Play]:
        """Plays neither announced nor retracted, by start."""

    async def stream_plays(
        self, stream_id: int, from_s: float, to_s: float, *, playing_only: bool = False
    ) -> list[Play]:
        """Plays (not retracted; only `playing` ones if asked) overlapping [from_s, to_s] on
        the stream clock, by start."""

    async def list_plays(
        self,
        stream_id: int,
        *,
        from_s: float | None,
        to_s: float | None,
        limit: int,
        offset: int,
        include_retracted: bool = False,
    ) -> PlayPage:
        """The log for the API: plays overlapping the range, by start then id."""

    async def get_play(self, stream_id: int, play_id: int) -> Play | None: ...

    def play_report(self, query: PlayReportQuery) -> AsyncIterator[PlayReportRow]:
        """Plays across streams (or of `query.stream`) on air in the range, aggregated in the
        database by song, ISRC, stream or UTC day (service/store/play_report.py), by key;
        yielded as the rows arrive, never all plays at once."""

    async def current_plays(self, stream_ids: list[int]) -> dict[int, Play]:
        """The latest play with status `playing` of each stream that has one."""

    async def apply_stream_update(self, update: StreamUpdate) -> list[int]:
        """Write a recomputation in one transaction; returns the new plays' ids.

        The segment replaces a stored one of the same sequence number only when its key sorts
        no later (two renditions of one sequence: the first key wins, whatever the order);
        the stream's max_end_s, last_sequence and last_key follow the latest segment end; the
        events' `play.started`/`play.ended` are written at most once per play.
        """

    async def idle_streams(self, timeout_s: float) -> list[StreamState]:
        """Streams with a `playing` play and no segment processed for `timeout_s`."""

    async def prune_stream(self, stream_id: int, before_s: float, below_window: int) -> int:
        """Drop segments ending before `before_s` and windows below `below_window` (their
        peaks and matches have served); the log itself is kept. Returns segments dropped."""

    async def pending_stream_events(self, stream_id: int | None = None) -> list[StreamEvent]:
        """Unpublished outbox rows (of one stream, or all), oldest first."""

    async def mark_stream_event_published(self, event_id: int) -> None: ...

    async def segment_neighbours(
        self, stream_id: int, sequence: int, start_s: float
    ) -> tuple[float | None, float | None]:
        """(latest end of the stored segments starting before `start_s`, earliest start of
        those starting after it), the segment `sequence` itself left out; None where there
        are none."""

    async def stream_gaps(self, stream_id: int | None = None) -> list[StreamGap]:
        """The outages of one stream (or of all), by stream then start."""

    async def open_stream_gap(self, stream_id: int, from_s: float) -> bool:
        """Record that the stream is down since `from_s`, unless it already is (one open gap
        per stream, whoever asks); True if this call opened it."""

    async def save_stream_gap(
        self, stream_id: int, gap_id: int | None, from_s: float, to_s: float | None
    ) -> int:
        """Insert a gap (`gap_id` None) or move an existing one's bounds; its id."""

    async def delete_stream_gap(self, gap_id: int) -> None: ...

    async def pending_gap_events(self) -> list[StreamGap]:
        """Gaps whose stream.down, or (closed ones) stream.up, has not gone out, oldest
        first."""

    async def mark_gap_published(self, gap_id: int, event: Literal["down", "up"]) -> None: ...


class Store(CatalogueStore, IngestLedger, StreamLog, Protocol):
    """A whole catalogue store, as `create_store` returns it: every part, plus opening,
    migrating and closing it."""

    async def open(self) -> None:
        """Connect (warm pool), apply pending migrations if asked, check the index version."""

    async def close(self) -> None: ...

    async def migrate(self) -> list[str]:
        """Apply pending migrations; returns the names applied. Safe when run concurrently."""

    async def stored_version(self) -> str | None:
        """The fingerprint version the catalogue was built with (None: none recorded yet);
        works on an unopened store, whatever its version."""

    async def ready(self) -> bool:
        """True when the database answers and every migration has run."""

    def connection_pool_usage(self) -> tuple[int, int] | None:
        """(open connections, connections handed out) of the connection pool; None for a
        store without one (SQLite)."""

"""The catalogue store: one narrow async interface, two implementations.

`postgres.py` (asyncpg pool, COPY ingest) serves production; `sqlite.py` (stdlib sqlite3 in a
thread) is the zero-setup default. Both keep a song row and its fingerprints in one
transaction, so a catalogue never holds half a song.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Literal, Protocol

import numpy as np

from service.audio.hashes import Fingerprints
from service.matching import Hits

#: Song fields a client may set (POST /songs form fields, PATCH /songs/{id} body).
EDITABLE_FIELDS = ("title", "artist", "album", "isrc", "external_id")


@dataclass(frozen=True)
class SongMeta:
    title: str
    artist: str | None = None
    album: str | None = None
    isrc: str | None = None
    external_id: str | None = None


@dataclass(frozen=True)
class Song:
    id: int
    title: str
    artist: str | None
    album: str | None
    isrc: str | None
    external_id: str | None
    duration_s: float
    #: Length in STFT frames of the fingerprint parameters (the matcher's chance model uses it).
    n_frames: int
    content_sha256: str
    fingerprint_count: int
    created_at: datetime


@dataclass(frozen=True)
class NewSong:
    """Everything needed to add a song: metadata, audio digest and its fingerprints."""

    meta: SongMeta
    duration_s: float
    n_frames: int
    content_sha256: str
    fingerprints: Fingerprints
    #: Band envelopes (service/audio/envelopes.py), int8 of shape (frames, bands), and their
    #: format; None stores none (the song is then never confirmed by envelopes).
    envelope: np.ndarray | None = None
    envelope_format: int = 0


@dataclass(frozen=True)
class EnvelopeRange:
    """Frames [first, last) of one song's band envelopes, as asked for."""

    song_id: int
    first: int
    last: int


@dataclass(frozen=True)
class EnvelopeSlice:
    """Stored band envelope frames of a song: int8 (frames, bands) from frame `first` on
    (fewer frames than asked where the song ends)."""

    first: int
    values: np.ndarray


def envelope_blob(envelope: np.ndarray) -> bytes:
    """How an envelope is stored: its int8 levels, frame-major (envelope_slice reads them)."""
    return np.ascontiguousarray(envelope, dtype=np.int8).tobytes()


def envelope_slice(blob: bytes, bands: int, first: int) -> EnvelopeSlice:
    """Frames of a stored envelope from the bytes a ranged read returned."""
    values = np.frombuffer(blob, dtype=np.int8)
    usable = len(values) - len(values) % bands
    return EnvelopeSlice(first, values[:usable].reshape(-1, bands))


@dataclass(frozen=True)
class SongPage:
    items: list[Song]
    total: int
    limit: int
    offset: int


@dataclass(frozen=True)
class StoreStats:
    songs: int
    fingerprints: int
    extra: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class CompactionResult:
    """What one compaction did (PostgreSQL; SQLite has nothing to compact)."""

    #: Fingerprints moved from the delta into the postings, and the hashes they went to.
    fingerprints: int = 0
    hashes: int = 0
    #: Deleted songs whose postings were purged.
    purged_songs: int = 0
    #: True when another process held the compaction lock and nothing was done.
    skipped: bool = False


@dataclass(frozen=True)
class ProcessedObject:
    """A row of the worker's idempotency ledger: one uploaded object version, processed.

    `result_json` is the report of that processing (exactly what goes to S3 and, condensed,
    to SNS); `published_at` stays None until both are out.
    """

    bucket: str
    key: str
    version_token: str
    kind: str
    result_json: str
    created_at: datetime
    claimed_at: datetime
    published_at: datetime | None


PlayStatus = Literal["playing", "ended", "retracted"]
PlayEventType = Literal["play.started", "play.updated", "play.ended"]


@dataclass(frozen=True)
class StreamState:
    """A live stream the worker has seen segments of (see core/streams.py)."""

    id: int
    name: str
    #: PTS minus sequence x segment length of the first segment processed: the reference
    #: that unwraps the 33-bit MPEG-TS clock the same way for every segment.
    pts_epoch_s: float
    #: UTC wall clock at stream time 0.
    wall_origin: datetime
    max_end_s: float
    last_sequence: int
    last_key: str
    last_segment_at: datetime
    created_at: datetime


@dataclass(frozen=True)
class NewStream:
    name: str
    pts_epoch_s: float
    wall_origin: datetime
    max_end_s: float
    last_sequence: int
    last_key: str


@dataclass(frozen=True)
class StreamSegment:
    """One archive segment placed on its stream's clock, with its peaks kept for matching
    the windows that straddle it and its neighbours."""

    sequence: int
    key: str
    start_s: float
    duration_s: float
    pts_s: float | None
    n_frames: int
    #: Serialised landmark peaks (core.stream_windows.pack_peaks).
    peaks: bytes
    #: The segment's band envelopes (envelope_blob: int8, frame-major, `envelope_bands` a
    #: frame; service/audio/envelopes.py) and their format; format 0: none (segments stored
    #: before migration 0006, or analysed without them).
    envelope_format: int = 0
    envelope_bands: int = 0
    envelope: bytes = b""
    #: Serialised second-tier peaks (peaks.find_sustained_peaks, packed as `peaks`); empty:
    #: none (segments stored before migration 0007, or analysed without them).
    sustained_peaks: bytes = b""

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


@dataclass(frozen=True)
class StreamWindow:
    """Matches of one window of the stream's fixed window grid, as JSON."""

    index: int
    matches_json: str


@dataclass(frozen=True)
class PlayFields:
    """What the log says about one play; everything but its identity."""

    song_id: int
    status: PlayStatus
    start_s: float  # on the stream clock
    end_s: float
    song_start_s: float  # position in the song at start_s
    song_end_s: float
    speed: float
    score: int
    confidence: float
    windows: int


#: PlayFields' names in declaration order: what the log computes for a play, and the columns
#: of `stream_plays` a reconciliation writes.
PLAY_FIELDS = tuple(f.name for f in fields(PlayFields))


@dataclass(frozen=True)
class Play(PlayFields):
    id: int = 0
    stream_id: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class PlayEventDraft:
    """An outbox row to write with a log change. `play_id` names an existing play; else
    `new_play` is the index of a play inserted by the same update, and the store writes its
    id into `payload["play"]["id"]`."""

    event_type: PlayEventType
    payload: dict[str, Any]
    play_id: int | None = None
    new_play: int | None = None


@dataclass(frozen=True)
class StreamEvent:
    id: int
    stream_id: int
    play_id: int
    event_type: PlayEventType
    payload_json: str
    created_at: datetime


@dataclass(frozen=True)
class StreamUpdate:
    """Everything one recomputation writes, applied in one transaction."""

    stream_id: int
    segment: StreamSegment | None = None
    windows: list[StreamWindow] = field(default_factory=list)
    new_plays: list[PlayFields] = field(default_factory=list)
    changed_plays: dict[int, PlayFields] = field(default_factory=dict)
    events: list[PlayEventDraft] = field(default_factory=list)


@dataclass(frozen=True)
class PlayPage:
    items: list[Play]
    total: int
    limit: int
    offset: int


class Store(Protocol):
    """What the core needs from a catalogue."""

    async def open(self) -> None:
        """Connect (warm pool), apply pending migrations if asked, check the index version."""

    async def close(self) -> None: ...

    async def migrate(self) -> list[str]:
        """Apply pending migrations; returns the names applied. Safe when run concurrently."""

    async def ready(self) -> bool:
        """True when the database answers and every migration has run."""

    async def add_song(self, song: NewSong) -> tuple[Song, bool]:
        """Insert song and fingerprints atomically; (existing, False) if the content is known."""

    async def find_by_content(self, content_sha256: str) -> Song | None: ...

    async def lookup(
        self, hashes: np.ndarray, max_postings: int | None = None, max_hits: int | None = None
    ) -> Hits:
        """Every stored fingerprint whose hash is in `hashes` (int32 array), in one round trip;
        hashes stored more than `max_postings` times are left out whole (see
        MatchParams.frequent_hash_factor), and so are the most frequent of the rest when they
        hold more than `max_hits` postings in all (see service.store.rules.kept_hashes)."""

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

    # --- the SQS worker's idempotency ledger ------------------------------------------------

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

    # --- live streams -----------------------------------------------------------------------

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

"""The records the store takes and returns: frozen dataclasses of plain values and numpy arrays,
the same for both backends."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Literal

import numpy as np

from service.arrays import sorted_positions
from service.audio.hashes import Fingerprints

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
    #: Where the audio came from (a path or an s3:// URI) and the SHA-256 of that file; None
    #: when it was uploaded without one (the API) or indexed before sources were kept.
    source: str | None = None
    file_sha256: str | None = None


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
    #: Where the audio came from and the SHA-256 of that file (Song.source, file_sha256).
    source: str | None = None
    file_sha256: str | None = None
    #: The id to store the song under (a catalogue rebuilt by `reindex` keeps its ids); None:
    #: the next free one.
    song_id: int | None = None


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


@dataclass(frozen=True)
class LeftOut:
    """The hashes a lookup's budget (`max_hits`) left out although each was under its cap,
    with how many postings each holds, and the frames of the catalogue those postings are
    spread over: the chance votes they would have brought still count in the chance model
    (service/match/search.py), each song its share by length, so that a budget makes a lookup
    cheaper without making its chance alignments look much more improbable than with every
    hash looked up. Hashes over the cap are not here: the model is calibrated with them left
    out."""

    #: Sorted distinct hashes.
    hashes: np.ndarray
    #: Postings of each hash.
    postings: np.ndarray
    #: Frames of every song in the catalogue (0 when no lookup behind it left anything out).
    catalogue_frames: int = 0
    #: (sorted song ids, sorted hashes): the postings of those hashes held by those songs
    #: were fetched after all (a query completing its candidates): for them the hits hold
    #: what was left out, and only for the hashes still left out does the table count.
    completed: tuple[tuple[np.ndarray, np.ndarray], ...] = ()

    @classmethod
    def nothing(cls) -> LeftOut:
        return cls(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.hashes)

    def postings_of(self, hashes: np.ndarray) -> np.ndarray:
        """Postings left out of each of `hashes` (0 for a hash not left out)."""
        found, at = sorted_positions(self.hashes, hashes)
        if not found.any():
            return np.zeros(len(hashes), dtype=np.int64)
        return np.where(found, self.postings[at], 0)


@dataclass(frozen=True)
class Hits:
    """Stored fingerprints that share a hash with the query; int arrays of shape (n,)."""

    hashes: np.ndarray
    song_ids: np.ndarray
    offsets: np.ndarray
    #: Length in frames of each hit's song (the chance model needs it per candidate song).
    song_frames: np.ndarray
    #: What the lookups these hits came from left out under their budget: still true of
    #: any selection of the hits.
    left_out: LeftOut = field(default_factory=LeftOut.nothing)

    @classmethod
    def empty(cls) -> Hits:
        e = np.empty(0, dtype=np.int64)
        return cls(e, e.copy(), e.copy(), e.copy())

    @classmethod
    def concat(cls, parts: list[Hits]) -> Hits:
        """The hits of all `parts` in order (what their lookups left out is the caller's to
        say)."""
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([p.hashes for p in parts]),
            np.concatenate([p.song_ids for p in parts]),
            np.concatenate([p.offsets for p in parts]),
            np.concatenate([p.song_frames for p in parts]),
        )

    def __len__(self) -> int:
        return len(self.hashes)

    def select(self, which: np.ndarray) -> Hits:
        """The hits `which` picks: a bool mask of shape (n,), or indices in the order wanted."""
        return Hits(
            self.hashes[which],
            self.song_ids[which],
            self.offsets[which],
            self.song_frames[which],
            self.left_out,
        )


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
    #: Decoded audio of all songs (s).
    audio_s: float = 0.0


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
    """A live stream the worker has seen segments of (see core/streams/segment.py)."""

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
class StreamGap:
    """An outage of a stream: a hole of at least STREAM_DOWN_AFTER_S in its segments'
    coverage of the stream clock (core/streams/health.py)."""

    id: int
    stream_id: int
    #: Stream clock (s) where the audio stopped and where it came back (None: still down).
    from_s: float
    to_s: float | None
    #: Whether its stream.down and stream.up events went out on SNS.
    down_published: bool = False
    up_published: bool = False


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
    #: Serialised landmark peaks (core.streams.windows.pack_peaks).
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
    #: Whether subscribers have been told of the play (`play.started` written to the outbox):
    #: the log holds plays as soon as their windows support them, but announces them only
    #: once the evidence stands (core/streams/announce.py).
    announced: bool = False
    #: Seconds around the start (end) during which the previous (next) song was identified
    #: too: the overlap of a crossfade, as far as the fingerprints hear it; 0 at a cut or a
    #: gap. The boundary itself is the midpoint of that overlap (core/streams/log.py).
    overlap_in_s: float = 0.0
    overlap_out_s: float = 0.0


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
    #: When this update is made: the new plays' `created_at`, the changed ones' `updated_at`
    #: (core/streams/announce.py waits from them); None: the database's clock.
    seen_at: datetime | None = None


@dataclass(frozen=True)
class PlayPage:
    items: list[Play]
    total: int
    limit: int
    offset: int

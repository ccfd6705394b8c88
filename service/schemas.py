"""The public JSON contract: the HTTP API's bodies and the worker's S3 reports.

A report is the processing result of one uploaded object; the worker's ledger
(`processed_objects.result_json`) keeps it verbatim and writes it next to the object. Its match
fields are those of `POST /identify` (`IdentifyReport` extends `IdentifyOut`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.core.identify.identify import IdentifyResult, SongMatch
from service.core.identify.timeline import SongTimelineEntry
from service.objects import ObjectCreated
from service.store import Song, SongPage


class SongOut(BaseModel):
    id: int
    title: str
    artist: str | None
    album: str | None
    isrc: str | None
    external_id: str | None
    duration_s: float = Field(description="Length of the decoded audio in seconds.")
    fingerprint_count: int
    created_at: datetime = Field(description="When the song was indexed (UTC).")
    source: str | None = Field(
        None,
        description="Where the audio was indexed from (a path or s3:// URI given by the command "
        "line, a manifest or the worker); null for uploads.",
    )

    @classmethod
    def of(cls, song: Song) -> SongOut:
        return cls(
            id=song.id,
            title=song.title,
            artist=song.artist,
            album=song.album,
            isrc=song.isrc,
            external_id=song.external_id,
            duration_s=round(song.duration_s, 3),
            fingerprint_count=song.fingerprint_count,
            created_at=song.created_at,
            source=song.source,
        )


class SongIndexedOut(SongOut):
    created: bool = Field(description="False when the same audio was already in the catalogue.")
    duplicate_of: int | None = Field(
        None,
        description="Set (to this song's id) when the upload is the same recording as this "
        "stored song in other bytes (re-encoded, resampled, quieter, silence trimmed), found by "
        "its fingerprints; nothing was added. `allow_duplicate=true` indexes it anyway.",
    )
    duplicate_coverage: float | None = Field(
        None,
        description="With duplicate_of: the smaller of the shares of the upload and of the "
        "stored song that match each other at one time offset (0-1).",
    )


class SongPageOut(BaseModel):
    items: list[SongOut]
    total: int
    limit: int
    offset: int

    @classmethod
    def of(cls, page: SongPage) -> SongPageOut:
        return cls(
            items=[SongOut.of(s) for s in page.items],
            total=page.total,
            limit=page.limit,
            offset=page.offset,
        )


class SongPatch(BaseModel):
    """Fields to change; omitted fields stay as they are, null clears an optional field."""

    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(None, min_length=1, max_length=500)
    artist: str | None = Field(None, max_length=500)
    album: str | None = Field(None, max_length=500)
    isrc: str | None = Field(None, max_length=64)
    external_id: str | None = Field(None, max_length=500)

    @field_validator("title")
    @classmethod
    def _title_kept(cls, title: str | None) -> str:
        # Every song stays listable by name: a title can change but never go blank.
        if title is None or not title.strip():
            raise ValueError("a song's title cannot be empty")
        return title


class MatchOut(BaseModel):
    song: SongOut
    score: int = Field(description="Aligned fingerprint hashes supporting this match.")
    confidence: float = Field(
        description="1 minus the probability that chance alone produces this score for any "
        "song of the catalogue."
    )
    song_offset_s: float = Field(description="Position in the song where the clip starts.")
    query_start_s: float = Field(description="Start of the matched span within the clip.")
    query_end_s: float = Field(description="End of the matched span within the clip.")
    speed: float = Field(description="Playback speed of the clip relative to the song.")
    evidence: Literal["landmarks", "envelope"] = Field(
        description="What decided the match: `landmarks` when the aligned hashes beat "
        "chance (one that does so narrowly is kept only where the song's band envelopes agree "
        "with the clip at its offset); `envelope` when they only found the candidate (a noisy "
        "clip) and the song's "
        "band envelopes confirmed it at that offset (the confidence is then the envelope "
        "check's)."
    )

    @classmethod
    def of(cls, found: SongMatch) -> MatchOut:
        m = found.match
        return cls(
            song=SongOut.of(found.song),
            score=m.score,
            confidence=round(m.confidence, 6),
            song_offset_s=round(m.song_offset_s, 3),
            query_start_s=round(m.query_start_s, 3),
            query_end_s=round(m.query_end_s, 3),
            speed=round(m.speed, 4),
            evidence=m.evidence,
        )


class TimelineEntryOut(BaseModel):
    song: SongOut
    start_s: float = Field(description="Where the song starts playing in the file.")
    end_s: float = Field(description="Where it stops.")
    song_start_s: float = Field(description="Position in the song at start_s.")
    song_end_s: float = Field(description="Position in the song at end_s.")
    score: int = Field(description="Aligned fingerprint anchors over the whole entry.")
    confidence: float
    speed: float

    @classmethod
    def of(cls, found: SongTimelineEntry) -> TimelineEntryOut:
        e = found.entry
        return cls(
            song=SongOut.of(found.song),
            start_s=round(e.start_s, 2),
            end_s=round(e.end_s, 2),
            song_start_s=round(e.song_start_s, 2),
            song_end_s=round(e.song_end_s, 2),
            score=e.score,
            confidence=round(e.confidence, 6),
            speed=round(e.speed, 4),
        )


class IdentifyOut(BaseModel):
    duration_s: float
    matches: list[MatchOut] = Field(description="Songs playing in the file, best first.")
    timeline: list[TimelineEntryOut] | None = Field(
        None,
        description="With ?timeline=true (and in reports of long files): every song found, "
        "in order, with where it starts and ends.",
    )
    elapsed_ms: float

    @classmethod
    def of(cls, result: IdentifyResult) -> IdentifyOut:
        return cls(
            duration_s=round(result.duration_s, 3),
            matches=[MatchOut.of(m) for m in result.matches],
            timeline=None
            if result.timeline is None
            else [TimelineEntryOut.of(e) for e in result.timeline],
            elapsed_ms=round(result.elapsed_ms, 1),
        )


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorBody


class HealthOut(BaseModel):
    status: str


# --- live streams ----------------------------------------------------------------------------


class PlaySongOut(BaseModel):
    id: int
    title: str | None = Field(description="Null if the song was deleted from the catalogue since.")
    artist: str | None
    isrc: str | None
    external_id: str | None


class PlayOut(BaseModel):
    """One entry of a stream's airplay log (the `play` of the SNS `play.*` events too)."""

    id: int
    stream: str
    status: Literal["playing", "ended", "retracted"] = Field(
        description="`playing` until the stream moves on; `retracted` if later segments "
        "showed the play was not there."
    )
    song: PlaySongOut
    start_at: datetime = Field(description="UTC wall clock when the song started on air.")
    end_at: datetime = Field(description="UTC wall clock of its end (so far, while playing).")
    stream_start_s: float = Field(description="Start on the stream clock (MPEG-TS PTS, s).")
    stream_end_s: float
    song_start_s: float = Field(description="Position in the song where the play starts.")
    song_end_s: float
    duration_s: float
    confidence: float
    score: int = Field(description="Aligned fingerprint anchors over all the play's windows.")
    speed: float


class PlayPageOut(BaseModel):
    items: list[PlayOut]
    total: int
    limit: int
    offset: int


class LastSegmentOut(BaseModel):
    sequence: int
    key: str
    stream_end_s: float = Field(description="End of the latest segment on the stream clock.")
    end_at: datetime = Field(
        description="UTC wall clock of that end: the stream's audio is known up to here."
    )
    processed_at: datetime = Field(description="When a segment of the stream last came in.")


class StreamOut(BaseModel):
    name: str
    created_at: datetime
    last_segment: LastSegmentOut
    current_play: PlayOut | None


# --- the worker's reports ------------------------------------------------------------------

EventType = Literal[
    "identify.result",
    "identify.error",
    "index.result",
    "index.error",
    "stream.segment",
    "stream.error",
]


class SourceObject(BaseModel):
    """The uploaded object a report is about."""

    bucket: str
    key: str
    etag: str | None = None
    version_id: str | None = None
    size_bytes: int | None = None

    @classmethod
    def of(cls, obj: ObjectCreated, etag: str | None, version_id: str | None) -> SourceObject:
        return cls(
            bucket=obj.bucket,
            key=obj.key,
            etag=etag or obj.etag,
            version_id=version_id or obj.version_id,
            size_bytes=obj.size_bytes,
        )


class _ReportBase(BaseModel):
    event_type: EventType
    source: SourceObject
    processing_ms: float = Field(description="Download, decoding, fingerprinting and matching.")
    processed_at: datetime


class IdentifyReport(IdentifyOut, _ReportBase):
    """`POST /identify`'s body (duration_s, elapsed_ms, matches) plus where it came from.
    Each song found appears once, its span in the file in query_start_s/query_end_s."""

    event_type: Literal["identify.result"] = "identify.result"
    match: bool


class WindowHitOut(BaseModel):
    song_id: int
    confidence: float
    start_s: float = Field(description="Stream time of the first aligned hash in the window.")
    end_s: float
    song_pos_s: float = Field(description="Position in the song at start_s.")


class StreamWindowOut(BaseModel):
    index: int
    start_s: float = Field(description="Window start on the stream clock.")
    hits: list[WindowHitOut]


class StreamSegmentReport(_ReportBase):
    """What a live-stream segment did to its stream (kept in the worker's ledger only; the
    log and its SNS events are the stream's output)."""

    event_type: Literal["stream.segment"] = "stream.segment"
    stream: str
    sequence: int
    outcome: Literal["stored", "superseded", "too_late"]
    stream_start_s: float
    duration_s: float
    pts_s: float | None
    placed_by: Literal["pts", "sequence"]
    windows: list[StreamWindowOut]
    play_ids: list[int] = Field(description="Plays created or changed by this segment.")


class IndexReport(_ReportBase):
    event_type: Literal["index.result"] = "index.result"
    song: SongIndexedOut


class ErrorReport(_ReportBase):
    event_type: Literal["identify.error", "index.error", "stream.error"]
    error: ErrorBody


# --- reports ---------------------------------------------------------------------------------


class PlayReportItemOut(BaseModel):
    key: str = Field(description="The group: song id, ISRC ('' for songs without), stream or day.")
    song_id: int | None = Field(description="By song: the song; by ISRC: its lowest song id.")
    title: str | None
    artist: str | None
    isrc: str | None
    plays: int
    airtime_s: float = Field(description="Seconds on air inside the range, all plays summed.")
    first_aired: datetime = Field(description="Start of the group's first play (UTC).")
    last_aired: datetime = Field(description="End of the group's last play (UTC).")
    songs: int = Field(description="Distinct songs among the plays.")
    streams: int = Field(description="Distinct streams among the plays.")


class PlayReportOut(BaseModel):
    group_by: str
    from_: datetime | None = Field(None, alias="from")
    to: datetime | None
    stream: str | None
    items: list[PlayReportItemOut]

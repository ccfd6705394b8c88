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
    """A catalogue song."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 42,
                    "title": "Blue in Green",
                    "artist": "Miles Davis",
                    "album": "Kind of Blue",
                    "isrc": "USSM15900115",
                    "external_id": "label-cat-0042",
                    "duration_s": 337.52,
                    "fingerprint_count": 48211,
                    "created_at": "2025-03-14T09:26:53.589000Z",
                }
            ]
        }
    )

    id: int = Field(description="The song's id in this catalogue.")
    title: str = Field(description="Given title, else the file's tag, else its name.")
    artist: str | None = Field(description="Given artist, else the file's tag.")
    album: str | None = Field(description="Given album, else the file's tag.")
    isrc: str | None = Field(description="International Standard Recording Code, if known.")
    external_id: str | None = Field(description="The caller's own id for the song.")
    duration_s: float = Field(description="Length of the decoded audio in seconds.")
    fingerprint_count: int = Field(description="Fingerprint hashes stored for the song.")
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
    """One page of songs."""

    items: list[SongOut] = Field(description="The page's songs, in the order indexed.")
    total: int = Field(description="Songs matching the filter, on all pages.")
    limit: int = Field(description="Page size asked for.")
    offset: int = Field(description="Songs skipped before this page.")

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

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"title": "Blue in Green (remaster)", "album": None}]},
    )

    title: str | None = Field(None, min_length=1, max_length=500, description="New title.")
    artist: str | None = Field(None, max_length=500, description="New artist; null clears it.")
    album: str | None = Field(None, max_length=500, description="New album; null clears it.")
    isrc: str | None = Field(None, max_length=64, description="New ISRC; null clears it.")
    external_id: str | None = Field(
        None, max_length=500, description="New external id; null clears it."
    )

    @field_validator("title")
    @classmethod
    def _title_kept(cls, title: str | None) -> str:
        # Every song stays listable by name: a title can change but never go blank.
        if title is None or not title.strip():
            raise ValueError("a song's title cannot be empty")
        return title


class MatchOut(BaseModel):
    """A catalogue song found in the clip."""

    song: SongOut = Field(description="The song found.")
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
    """One stretch of the file where one song plays."""

    song: SongOut = Field(description="The song playing.")
    start_s: float = Field(description="Where the song starts playing in the file.")
    end_s: float = Field(description="Where it stops.")
    song_start_s: float = Field(description="Position in the song at start_s.")
    song_end_s: float = Field(description="Position in the song at end_s.")
    score: int = Field(description="Aligned fingerprint anchors over the whole entry.")
    confidence: float = Field(description="As a match's confidence, over the whole entry.")
    speed: float = Field(description="Playback speed relative to the song.")

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


class DamagedSpanOut(BaseModel):
    """A stretch of the audio that could not be decoded (corrupt packets): silence of its
    length stands in for it, so every time after it is where it was played."""

    start_s: float = Field(description="Start of the damaged stretch (s from the audio's start).")
    end_s: float = Field(description="End of the damaged stretch (s).")

    @classmethod
    def all_of(cls, spans: list[tuple[float, float]], at_s: float = 0.0) -> list[DamagedSpanOut]:
        return [cls(start_s=round(at_s + a, 3), end_s=round(at_s + b, 3)) for a, b in spans]


class IdentifyOut(BaseModel):
    """What `POST /identify` found in a file."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "duration_s": 10.0,
                    "matches": [
                        {
                            "song": SongOut.model_config["json_schema_extra"]["examples"][0],  # type: ignore[index]
                            "score": 212,
                            "confidence": 0.999999,
                            "song_offset_s": 61.28,
                            "query_start_s": 0.05,
                            "query_end_s": 9.93,
                            "speed": 1.0,
                            "evidence": "landmarks",
                        }
                    ],
                    "timeline": None,
                    "elapsed_ms": 184.2,
                }
            ]
        }
    )

    duration_s: float = Field(description="Length of the decoded audio in seconds.")
    matches: list[MatchOut] = Field(description="Songs playing in the file, best first.")
    timeline: list[TimelineEntryOut] | None = Field(
        None,
        description="With ?timeline=true (and in reports of long files): every song found, "
        "in order, with where it starts and ends.",
    )
    damaged_spans: list[DamagedSpanOut] = Field(
        default_factory=list,
        description="Stretches of the file that could not be decoded, in seconds from its "
        "start; empty for a sound file. More than half: 422 undecodable_audio instead.",
    )
    elapsed_ms: float = Field(description="Decoding, fingerprinting and matching time.")

    @classmethod
    def of(cls, result: IdentifyResult) -> IdentifyOut:
        return cls(
            duration_s=round(result.duration_s, 3),
            matches=[MatchOut.of(m) for m in result.matches],
            timeline=None
            if result.timeline is None
            else [TimelineEntryOut.of(e) for e in result.timeline],
            damaged_spans=DamagedSpanOut.all_of(result.damaged_spans),
            elapsed_ms=round(result.elapsed_ms, 1),
        )


class ErrorBody(BaseModel):
    code: str = Field(
        description="Stable machine-readable error code (`validation_error`, `not_found`, "
        "`busy`, ...); docs/api.md lists them."
    )
    message: str = Field(description="What went wrong, for a person.")


class ErrorOut(BaseModel):
    """Every error response of the API has this shape."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"error": {"code": "not_found", "message": "no song with id 42"}}]
        }
    )

    error: ErrorBody = Field(description="What went wrong.")


class WorkerStatusOut(BaseModel):
    """The SQS poller running inside this process."""

    status: Literal["ok", "unhealthy"] = Field(
        description="`ok` while it receives normally (SQS answered within the last long poll "
        "plus a minute, or every slot is busy)."
    )
    stopping: bool = Field(description="Shutting down: no longer receiving.")
    in_flight: int = Field(description="Messages being processed now.")
    concurrency: int = Field(description="Most messages processed at once (WORKER_CONCURRENCY).")
    processed: int = Field(description="Messages handled and deleted since start.")
    failed: int = Field(description="Message attempts that failed since start.")
    dead_lettered: int = Field(description="Messages moved to the dead-letter queue.")
    last_receive_age_s: float | None = Field(
        description="Seconds since SQS last answered a receive call."
    )


class HealthOut(BaseModel):
    """A probe's answer."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ready"}]})

    status: str = Field(description="`ok` (liveness), `ready` (readiness).")
    worker: WorkerStatusOut | None = Field(
        None,
        description="The in-process SQS poller's status (readiness, when SQS_QUEUE_URL is set "
        "and RUN_WORKER_IN_API is true); it does not decide readiness.",
    )


# --- live streams ----------------------------------------------------------------------------


class PlaySongOut(BaseModel):
    """The song a play aired, as the catalogue names it now."""

    id: int = Field(description="The song's catalogue id.")
    title: str | None = Field(description="Null if the song was deleted from the catalogue since.")
    artist: str | None = Field(description="Its artist, if known.")
    isrc: str | None = Field(description="Its ISRC, if known.")
    external_id: str | None = Field(description="The caller's own id for the song.")


class PlayOut(BaseModel):
    """One entry of a stream's airplay log (the `play` of the SNS `play.*` events too)."""

    id: int = Field(description="The play's id within its stream's log.")
    stream: str = Field(description="The stream's name.")
    status: Literal["playing", "ended", "retracted"] = Field(
        description="`playing` until the stream moves on; `retracted` if later segments "
        "showed the play was not there."
    )
    song: PlaySongOut = Field(description="The song aired.")
    start_at: datetime = Field(description="UTC wall clock when the song started on air.")
    end_at: datetime = Field(description="UTC wall clock of its end (so far, while playing).")
    stream_start_s: float = Field(description="Start on the stream clock (MPEG-TS PTS, s).")
    stream_end_s: float = Field(description="End on the stream clock (s).")
    song_start_s: float = Field(description="Position in the song where the play starts.")
    song_end_s: float = Field(description="Position in the song where the play ends.")
    duration_s: float = Field(description="How long the song was on air (s).")
    confidence: float = Field(description="As a match's confidence, over the play's windows.")
    score: int = Field(description="Aligned fingerprint anchors over all the play's windows.")
    speed: float = Field(description="Playback speed relative to the song.")
    announced: bool = Field(
        description="Whether `play.started` went out: a play the log holds while segments "
        "around it are still missing is provisional until then (docs/streams.md)."
    )
    overlap_in_s: float = Field(
        description="Seconds around the start during which the previous song was identified "
        "too (a crossfade; 0 at a cut or a gap). The start is the middle of that overlap."
    )
    overlap_out_s: float = Field(description="The same around the end, with the next song.")


class PlayPageOut(BaseModel):
    """One page of a stream's airplay log."""

    items: list[PlayOut] = Field(description="The page's plays, in stream order.")
    total: int = Field(description="Plays matching the query, on all pages.")
    limit: int = Field(description="Page size asked for.")
    offset: int = Field(description="Plays skipped before this page.")


class LastSegmentOut(BaseModel):
    """The stream's latest segment (the furthest on its clock)."""

    sequence: int = Field(description="Its sequence number (from its key).")
    key: str = Field(description="Its S3 key.")
    stream_end_s: float = Field(description="End of the latest segment on the stream clock.")
    end_at: datetime = Field(
        description="UTC wall clock of that end: the stream's audio is known up to here."
    )
    processed_at: datetime = Field(description="When a segment of the stream last came in.")


class GapOut(BaseModel):
    """An outage: a stretch of at least STREAM_DOWN_AFTER_S with no audio from the stream."""

    model_config = ConfigDict(populate_by_name=True)

    from_: datetime = Field(alias="from", description="UTC wall clock where the audio stopped.")
    to: datetime | None = Field(
        description="UTC wall clock where it came back; null while the stream is down."
    )
    duration_s: float = Field(description="How long the audio was missing (so far, if down).")
    stream_from_s: float = Field(description="`from` on the stream clock (s).")
    stream_to_s: float | None = Field(description="`to` on the stream clock (s).")


class StreamOut(BaseModel):
    """A live stream the worker has seen segments of."""

    name: str = Field(description="The stream's name (from its segments' keys).")
    created_at: datetime = Field(description="When its first segment came in.")
    status: Literal["up", "down"] = Field(
        description="`down` from STREAM_DOWN_AFTER_S without audio until segments return."
    )
    last_segment_at: datetime = Field(description="When a segment of the stream last came in.")
    last_segment: LastSegmentOut = Field(description="Its latest segment.")
    current_play: PlayOut | None = Field(description="The play on air now, if any.")
    gaps: list[GapOut] = Field(
        description="Its outages, oldest first (the open one last while it is down): the "
        "hours outside them are the ones the airplay log has evidence for."
    )


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
    damaged_spans: list[DamagedSpanOut] = Field(
        default_factory=list,
        description="Stretches of the segment that could not be decoded, on the stream clock "
        "(silence in their place, so the rest keeps its time).",
    )


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
    title: str | None = Field(description="By song or ISRC: the song's title; else null.")
    artist: str | None = Field(description="By song or ISRC: the song's artist; else null.")
    isrc: str | None = Field(description="By song or ISRC: the ISRC; else null.")
    plays: int = Field(description="Plays in the group that overlap the range.")
    airtime_s: float = Field(description="Seconds on air inside the range, all plays summed.")
    first_aired: datetime = Field(description="Start of the group's first play (UTC).")
    last_aired: datetime = Field(description="End of the group's last play (UTC).")
    songs: int = Field(description="Distinct songs among the plays.")
    streams: int = Field(description="Distinct streams among the plays.")


class PlayReportOut(BaseModel):
    group_by: str = Field(description="What the items are grouped by: song, isrc, stream or day.")
    from_: datetime | None = Field(
        None, alias="from", description="Start of the range (UTC); null: from the first play."
    )
    to: datetime | None = Field(description="End of the range (UTC); null: to the last play.")
    stream: str | None = Field(description="The one stream reported on; null: every stream.")
    items: list[PlayReportItemOut] = Field(description="One row per group, in key order.")

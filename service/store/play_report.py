"""The airplay report's query, for both dialects: plays across streams in a wall-clock range,
aggregated in the database by song, ISRC, stream or UTC day, so no play is ever read into the
process; only one row per group comes back.

Each play's wall-clock start and end are its stream's origin plus its stream-clock seconds.
A play counts in the range when it is on air in it; its airtime is clipped to the range. A play
belongs to the day it starts on (UTC).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

GroupBy = Literal["song", "isrc", "stream", "day"]

#: Seconds far beyond any play, standing for an open end of the range.
_OPEN_S = 1e13


@dataclass(frozen=True)
class PlayReportQuery:
    group_by: GroupBy = "song"
    #: Plays still on air after / starting before these times (UTC when naive); None: open.
    since: datetime | None = None
    until: datetime | None = None
    #: One stream's plays only.
    stream: str | None = None

    def range_epoch_s(self) -> tuple[float, float]:
        def epoch(moment: datetime | None, default: float) -> float:
            if moment is None:
                return default
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return moment.timestamp()

        return epoch(self.since, -_OPEN_S), epoch(self.until, _OPEN_S)


@dataclass(frozen=True)
class PlayReportRow:
    """One group: its key (song id, ISRC, stream name or YYYY-MM-DD), how many plays, their
    airtime in the range, when the first started and the last ended, and the song (by song;
    by ISRC, the lowest song id of the ISRC's songs and its title and artist)."""

    key: str
    plays: int
    airtime_s: float
    first_aired: datetime
    last_aired: datetime
    songs: int
    streams: int
    song_id: int | None = None
    title: str | None = None
    artist: str | None = None
    isrc: str | None = None


def report_sql(group_by: GroupBy, epoch_of_origin: str, day_of: str, param: list[str]) -> str:
    """The report's statement. `epoch_of_origin` turns `s.wall_origin` into Unix seconds,
    `day_of(x)` (a format with {x}) Unix seconds into YYYY-MM-DD; `param` names the four
    parameters (range start, range end, stream name or NULL, twice) in the dialect's style."""
    start, end, stream, stream_again = param
    key = {
        "song": "CAST(p.song_id AS TEXT)",
        "isrc": "coalesce(g.isrc, '')",
        "stream": "p.stream",
        "day": day_of.format(x="p.start_e"),
    }[group_by]
    order = "min(p.song_id)" if group_by == "song" else "1"
    return (
        "WITH p AS ("
        f" SELECT pl.song_id, s.name AS stream, {epoch_of_origin} + pl.start_s AS start_e,"
        f" {epoch_of_origin} + pl.end_s AS end_e"
        " FROM stream_plays pl JOIN streams s ON s.id = pl.stream_id"
        f" WHERE pl.status <> 'retracted' AND ({stream} IS NULL OR s.name = {stream_again}))"
        f" SELECT {key} AS key, count(*) AS plays,"
        f" sum(CASE WHEN p.end_e < {end} THEN p.end_e ELSE {end} END"
        f" - CASE WHEN p.start_e > {start} THEN p.start_e ELSE {start} END) AS airtime_s,"
        " min(p.start_e) AS first_e, max(p.end_e) AS last_e,"
        " count(DISTINCT p.song_id) AS songs, count(DISTINCT p.stream) AS streams,"
        " min(p.song_id) AS song_id, min(g.title) AS title, min(g.artist) AS artist,"
        " min(g.isrc) AS isrc"
        " FROM p LEFT JOIN songs g ON g.id = p.song_id"
        f" WHERE p.end_e > {start} AND p.start_e < {end}"
        f" GROUP BY 1 ORDER BY {order}, 1"
    )


def report_row(values: dict[str, Any], group_by: GroupBy) -> PlayReportRow:
    """A result row of `report_sql`; the song fields only where a group has one song (by
    song) or one ISRC (by ISRC: its lowest song id, that song's title and artist)."""
    with_song = group_by in ("song", "isrc")
    return PlayReportRow(
        key=str(values["key"]),
        plays=int(values["plays"]),
        airtime_s=round(float(values["airtime_s"]), 3),
        first_aired=datetime.fromtimestamp(float(values["first_e"]), UTC),
        last_aired=datetime.fromtimestamp(float(values["last_e"]), UTC),
        songs=int(values["songs"]),
        streams=int(values["streams"]),
        song_id=int(values["song_id"]) if with_song and values["song_id"] is not None else None,
        title=values["title"] if with_song else None,
        artist=values["artist"] if with_song else None,
        isrc=(values["isrc"] if group_by == "song" else (str(values["key"]) or None))
        if with_song
        else None,
    )

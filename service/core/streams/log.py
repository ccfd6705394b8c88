"""Window matches -> the airplay log, and the difference a recomputation makes to it.

Pure functions, no I/O. A play is one song aired with a consistent alignment: its windows'
hits agree on where the song's start sits on the stream clock (within ALIGNMENT_TOLERANCE_S,
following the match speed), and no gap between them exceeds `gap_s` (one missing 12-s segment
must not split a play). Unknown music, talk and jingles match nothing, so they make no play;
a single window that matches by chance makes none either (`min_windows`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from statistics import median
from typing import Any

from service.core.streams.announce import Clock, Coverage
from service.core.streams.windows import WINDOW_S, WindowHit
from service.store import PLAY_FIELDS, Play, PlayEventDraft, PlayFields, Song

#: Drift (s) of the song position between windows still counted as one alignment.
ALIGNMENT_TOLERANCE_S = 1.0
#: An announced play whose start (or, once ended, its end) moves by more than this gets a
#: `play.updated`: the log keeps times to the millisecond, so every change a bill could see is
#: announced. The end advancing while the song plays is not a correction.
CORRECTION_S = 0.0005


@dataclass(frozen=True)
class LogParams:
    #: Longest silence between two windows of one play (s): a missing 12-s segment plus slack.
    gap_s: float = 16.0
    #: Fewest windows and shortest span (s) a play needs.
    min_windows: int = 2
    min_play_s: float = 8.0
    #: Stream (s) that must have arrived before a play's start, and after it, before the play
    #: is announced (core/streams/announce.py): the longest gap inside a play plus a window,
    #: and a window. `lead_s` past its end must have arrived before it is ended.
    lead_s: float = 26.0
    confirm_s: float = WINDOW_S
    #: How long (wall clock, s) a play stays in the log unannounced, or unended while the
    #: stream is past it, when segments around it are missing: then they are taken as lost.
    settle_s: float = 60.0


@dataclass
class _Chain:
    song_id: int
    hits: list[tuple[int, WindowHit]]

    @property
    def last(self) -> WindowHit:
        return self.hits[-1][1]

    @property
    def end_s(self) -> float:
        return max(h.end_s for _, h in self.hits)

    def expected_pos(self, at_s: float) -> float:
        last = self.last
        return last.song_pos_s + (at_s - last.start_s) * last.speed


def build_plays(
    windows: Iterable[tuple[int, list[WindowHit]]], params: LogParams
) -> list[PlayFields]:
    """Every play the window hits support, by start; status `playing` (see play_status)."""
    hits = sorted(
        ((k, h) for k, hs in windows for h in hs),
        key=lambda kh: (kh[1].start_s, kh[0], kh[1].song_id),
    )
    chains: list[_Chain] = []
    open_by_song: dict[int, list[_Chain]] = {}
    for k, hit in hits:
        best, best_err = None, ALIGNMENT_TOLERANCE_S
        for chain in open_by_song.get(hit.song_id, []):
            if hit.start_s - chain.end_s > params.gap_s:
                continue
            err = abs(hit.song_pos_s - chain.expected_pos(hit.start_s))
            if err <= best_err:
                best, best_err = chain, err
        if best is None:
            best = _Chain(hit.song_id, [])
            chains.append(best)
            open_by_song.setdefault(hit.song_id, []).append(best)
        best.hits.append((k, hit))
    plays = [_play_of(c) for c in chains if len({k for k, _ in c.hits}) >= params.min_windows]
    plays = [p for p in plays if p.end_s - p.start_s >= params.min_play_s]
    plays = _join_overlapping(_one_alignment_at_a_time(plays))
    return _hand_over(sorted(plays, key=lambda p: (p.start_s, p.song_id)))


#: Longest gap (s) between one song's last fingerprints and the next song's first that is
#: still one handover (a cut or a crossfade), given one boundary in the middle. Longer gaps
#: are silence or talk, and each play keeps its own edge.
HANDOVER_GAP_S = 2.0


def _hand_over(plays: list[PlayFields]) -> list[PlayFields]:
    """One boundary where one song gives way to the next.

    Fingerprints lose the outgoing song some way before it stops (it fades, or the next one
    drowns it) and find the incoming one some way after it starts, about equally far from
    the crossing whichever way the songs are joined. So where the next song's first
    fingerprints come less than HANDOVER_GAP_S after the last of this one's, or before them
    (a crossfade), the play ends and the next starts at the midpoint; the stretch in which
    both were identified is stated as `overlap_out_s` and `overlap_in_s`."""
    out = list(plays)
    for i in range(len(out) - 1):
        a = out[i]
        nexts = [
            (j, b)
            for j, b in enumerate(out[i + 1 :], i + 1)
            if b.song_id != a.song_id
            and b.start_s > a.start_s
            and b.end_s > a.end_s
            and b.start_s - a.end_s <= HANDOVER_GAP_S
        ]
        if not nexts:
            continue
        j, b = min(nexts, key=lambda jb: (jb[1].start_s, jb[1].song_id))
        at = round((a.end_s + b.start_s) / 2, 3)
        overlap = round(max(0.0, a.end_s - b.start_s), 3)
        out[i] = replace(
            a,
            end_s=at,
            song_end_s=round(a.song_end_s + (at - a.end_s) * a.speed, 3),
            overlap_out_s=overlap,
        )
        out[j] = replace(
            b,
            start_s=at,
            song_start_s=round(b.song_start_s + (at - b.start_s) * b.speed, 3),
            overlap_in_s=overlap,
        )
    return out


def _one_alignment_at_a_time(plays: list[PlayFields]) -> list[PlayFields]:
    """A song cannot air twice at once: of two plays of one song that mostly overlap (music
    that repeats itself matches at two of its repeats), keep the better supported one."""
    kept: list[PlayFields] = []
    for play in sorted(plays, key=lambda p: (-p.score, p.start_s)):
        length = play.end_s - play.start_s
        if not any(
            o.song_id == play.song_id and _overlap(o, play) > 0.5 * min(length, o.end_s - o.start_s)
            for o in kept
        ):
            kept.append(play)
    return kept


def _join_overlapping(plays: list[PlayFields]) -> list[PlayFields]:
    """Plays of one song that overlap in stream time are one airing: a window that matched the
    song at a repeated section (another alignment) while it kept playing must not split it.
    The earlier play's alignment is kept; plays that merely follow each other stay apart."""
    out: list[PlayFields] = []
    for play in sorted(plays, key=lambda p: (p.song_id, p.start_s, p.end_s)):
        last = out[-1] if out else None
        if last is None or last.song_id != play.song_id or play.start_s >= last.end_s:
            out.append(play)
            continue
        end = max(last.end_s, play.end_s)
        out[-1] = replace(
            last,
            end_s=end,
            song_end_s=round(last.song_start_s + (end - last.start_s) * last.speed, 3),
            score=last.score + play.score,
            confidence=max(last.confidence, play.confidence),
            windows=last.windows + play.windows,
        )
    return out


def _play_of(chain: _Chain) -> PlayFields:
    first = min((h for _, h in chain.hits), key=lambda h: h.start_s)
    start, end = first.start_s, chain.end_s
    speed = float(median(h.speed for _, h in chain.hits))
    return PlayFields(
        song_id=chain.song_id,
        status="playing",
        start_s=round(start, 3),
        end_s=round(end, 3),
        song_start_s=round(first.song_pos_s, 3),
        song_end_s=round(first.song_pos_s + (end - start) * speed, 3),
        speed=round(speed, 5),
        score=sum(h.score for _, h in chain.hits),
        confidence=max(h.confidence for _, h in chain.hits),
        windows=len({k for k, _ in chain.hits}),
    )


def play_status(
    play: PlayFields,
    others: list[PlayFields],
    stream_end_s: float,
    params: LogParams,
    coverage: Coverage,
    settled: bool,
) -> str:
    """`ended` once the stream has moved on for good: the segments cover `lead_s` past the
    play (a hit up to `gap_s` after it would extend it, and the windows holding such a hit are
    complete only a window later) or a window past it while another song plays on beyond
    that; with segments missing there, once the stream is `gap_s` past it and the play has
    `settled`: gone unchanged for the settle delay (see announce.py)."""
    if play.status != "playing":
        return play.status
    if stream_end_s >= play.end_s + params.gap_s and (
        settled or coverage.covers(play.end_s, play.end_s + params.lead_s)
    ):
        return "ended"
    for other in others:
        if (
            other.song_id != play.song_id
            and other.start_s >= play.start_s
            and other.end_s >= play.end_s + WINDOW_S
            and (settled or coverage.covers(play.end_s, play.end_s + WINDOW_S))
        ):
            return "ended"
    return "playing"


def may_announce(play: PlayFields, coverage: Coverage, params: LogParams, settled: bool) -> bool:
    """Whether `play` stands whatever segments are still to come (see announce.py)."""
    lo_s = play.start_s - params.lead_s
    return settled or coverage.covers(lo_s, play.start_s + params.confirm_s)


def _alignment(p: PlayFields) -> float:
    """Stream time at which the song's own start plays."""
    return p.start_s - p.song_start_s / max(p.speed, 1e-6)


def _overlap(a: PlayFields, b: PlayFields) -> float:
    return min(a.end_s, b.end_s) - max(a.start_s, b.start_s)


@dataclass
class LogChanges:
    new_plays: list[PlayFields]
    changed_plays: dict[int, PlayFields]
    #: (event type, play id or None, index into new_plays or None, the play's fields)
    events: list[tuple[str, int | None, int | None, PlayFields]]

    def announce(self, play_id: int | None, index: int | None, after: PlayFields) -> None:
        """`play.started`, and `play.ended` with it when the play is already over."""
        self.events.append(("play.started", play_id, index, after))
        if after.status == "ended":
            self.events.append(("play.ended", play_id, index, after))


def reconcile(
    old: list[Play],
    new: list[PlayFields],
    stream_end_s: float,
    params: LogParams,
    coverage: Coverage,
    clock: Clock,
) -> LogChanges:
    """Match recomputed plays to the stored ones of the same region and say what changes.

    A stored play keeps its id when a recomputed play of the same song and alignment
    overlaps it (announced plays first, then the largest overlap, one to one); recomputed
    plays without a stored one are new. A play is announced (`play.started`, and
    `play.ended` too if the stream has already moved past it) once it stands (may_announce);
    an announced play gets `play.updated` when its start moves, or its end after it ended,
    and `play.ended` when it ends. A stored play without a successor is retracted: with a
    `play.updated` if it was announced, silently if not. An ended play stays ended.
    """
    pairs = sorted(
        (
            (not o.announced, -_overlap(n, o), i, j)
            for i, n in enumerate(new)
            for j, o in enumerate(old)
            if n.song_id == o.song_id
            and _overlap(n, o) > -params.gap_s
            and abs(_alignment(n) - _alignment(o)) <= 2 * ALIGNMENT_TOLERANCE_S
        ),
    )
    new_of_old: dict[int, int] = {}
    old_of_new: dict[int, int] = {}
    for _, _, i, j in pairs:
        if i not in old_of_new and j not in new_of_old:
            old_of_new[i], new_of_old[j] = j, i
    changes = LogChanges([], {}, [])
    for i, fields in enumerate(new):
        before = old[old_of_new[i]] if i in old_of_new else None
        # Waited long enough for missing segments: since it was first seen, to announce it;
        # since it last changed, to end it.
        seen = clock.settled(before.created_at if before else None)
        quiet = clock.settled(before.updated_at if before else None)
        status = play_status(fields, new, stream_end_s, params, coverage, quiet)
        if before is not None and before.status == "ended":
            status = "ended"
        was_announced = before is not None and before.announced
        announced = was_announced or may_announce(fields, coverage, params, seen)
        after = replace(fields, status=status, announced=announced)
        if before is None:
            index = len(changes.new_plays)
            changes.new_plays.append(after)
            if announced:
                changes.announce(None, index, after)
            continue
        if _fields(before) == after:
            continue
        changes.changed_plays[before.id] = after
        if not was_announced:
            if announced:
                changes.announce(before.id, None, after)
        elif before.status == "playing" and status == "ended":
            changes.events.append(("play.ended", before.id, None, after))
        elif _corrected(before, after):
            changes.events.append(("play.updated", before.id, None, after))
    for j, before in enumerate(old):
        if j not in new_of_old:
            after = replace(_fields(before), status="retracted")
            changes.changed_plays[before.id] = after
            if before.announced:
                changes.events.append(("play.updated", before.id, None, after))
    return changes


def _corrected(before: Play, after: PlayFields) -> bool:
    """Whether an announced play changed in a way a bill could see."""
    if abs(before.start_s - after.start_s) > CORRECTION_S or before.song_id != after.song_id:
        return True
    return before.status == "ended" and abs(before.end_s - after.end_s) > CORRECTION_S


def _fields(play: Play) -> PlayFields:
    return PlayFields(**{name: getattr(play, name) for name in PLAY_FIELDS})


def settle(
    plays: list[Play],
    stream_end_s: float,
    params: LogParams,
    coverage: Coverage,
    clock: Clock,
) -> LogChanges:
    """Plays not being recomputed (outside a segment's region, or swept): the ones the stream
    has moved past for good end, and unannounced ones that now stand are announced."""
    changes = LogChanges([], {}, [])
    for play in plays:
        if play.status == "retracted":
            continue
        seen, quiet = clock.settled(play.created_at), clock.settled(play.updated_at)
        status = play_status(_fields(play), [], stream_end_s, params, coverage, quiet)
        announced = play.announced or may_announce(play, coverage, params, seen)
        after = replace(_fields(play), status=status, announced=announced)
        if after == _fields(play):
            continue
        changes.changed_plays[play.id] = after
        if not play.announced:
            if announced:
                changes.announce(play.id, None, after)
        elif play.status == "playing" and status == "ended":
            changes.events.append(("play.ended", play.id, None, after))
    return changes


def ended_by_timeout(plays: list[Play]) -> LogChanges:
    """The stream went quiet: its current plays are over, and every play it holds stands."""
    changes = LogChanges([], {}, [])
    for play in plays:
        if play.status == "retracted" or (play.status == "ended" and play.announced):
            continue
        after = replace(_fields(play), status="ended", announced=True)
        changes.changed_plays[play.id] = after
        if play.announced:
            changes.events.append(("play.ended", play.id, None, after))
        else:
            changes.announce(play.id, None, after)
    return changes


# --- how plays and events look to the outside ---------------------------------------------


def song_summary(song: Song | None, song_id: int) -> dict[str, Any]:
    if song is None:  # deleted from the catalogue since
        return {"id": song_id, "title": None, "artist": None, "isrc": None, "external_id": None}
    return {
        "id": song.id,
        "title": song.title,
        "artist": song.artist,
        "isrc": song.isrc,
        "external_id": song.external_id,
    }


def wall_clock(origin: datetime, stream_s: float) -> datetime:
    return origin + timedelta(seconds=stream_s)


def play_document(
    play: PlayFields, play_id: int | None, stream: str, origin: datetime, song: Song | None
) -> dict[str, Any]:
    """A play as the API and the SNS events show it."""
    return {
        "id": play_id,
        "stream": stream,
        "status": play.status,
        "song": song_summary(song, play.song_id),
        "start_at": wall_clock(origin, play.start_s).isoformat().replace("+00:00", "Z"),
        "end_at": wall_clock(origin, play.end_s).isoformat().replace("+00:00", "Z"),
        "stream_start_s": round(play.start_s, 3),
        "stream_end_s": round(play.end_s, 3),
        "song_start_s": round(play.song_start_s, 3),
        "song_end_s": round(play.song_end_s, 3),
        "duration_s": round(play.end_s - play.start_s, 3),
        "confidence": round(play.confidence, 6),
        "score": play.score,
        "speed": round(play.speed, 4),
        "announced": play.announced,
        "overlap_in_s": round(play.overlap_in_s, 3),
        "overlap_out_s": round(play.overlap_out_s, 3),
    }


def event_drafts(
    changes: LogChanges, stream: str, origin: datetime, songs: dict[int, Song]
) -> list[PlayEventDraft]:
    """Outbox rows for the changes, in stream order (an end before a later start)."""

    def when(event: tuple[str, int | None, int | None, PlayFields]) -> tuple[float, int]:
        kind, _, _, fields = event
        rank = {"play.updated": 0, "play.ended": 1, "play.started": 2}[kind]
        at = fields.end_s if kind == "play.ended" else fields.start_s
        return (at, rank)

    drafts = []
    for event in sorted(changes.events, key=when):
        kind, play_id, new_index, fields = event
        drafts.append(
            PlayEventDraft(
                event_type=kind,  # type: ignore[arg-type]
                payload={
                    "event_type": kind,
                    "stream": stream,
                    "play": play_document(
                        fields, play_id, stream, origin, songs.get(fields.song_id)
                    ),
                },
                play_id=play_id,
                new_play=new_index,
            )
        )
    return drafts

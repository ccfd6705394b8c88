"""When a play may be announced or called over: once segments still to come cannot undo it.

The log is recomputed from whatever segments have arrived, so while segments are missing
(delivered out of order, by several workers, or lost) it holds provisional plays: a song's
middle seen before its beginning, two pieces of one airing that a late segment joins. Those
must not reach subscribers as `play.started`, or a late segment retracts what was billed.
So each play is announced only when the stream around it is complete:

- **play.started** once the stored segments cover, with no hole longer than
  COVERAGE_SLACK_S, the stream from `lead_s` before the play's start (LogParams: the longest
  gap inside a play plus a window, 26 s: no earlier piece of the same airing can be hiding
  there) to `confirm_s` after it (10 s: the windows that place the start are complete).
  Nothing precedes a channel's first segment (sequence FIRST_SEQUENCE or lower), so the lead
  is clipped there. A play that cannot meet this because a segment is lost for good is
  announced once it has been in the log `settle_s` (STREAM_ANNOUNCE_SETTLE_S), or when its
  stream goes quiet.
- **play.ended** once the segments cover `lead_s` past the play's end (26 s: no segment
  still to come could extend it, nor complete a window that would), or a window's length
  past it while another song plays on there;
  with a hole there, once the play has gone unchanged for `settle_s` and the stream is
  `gap_s` past it; or when the stream goes quiet.

In order, every segment before the newest is present, so the rule costs nothing: a play is
announced as soon as the log has it and its first 10 s have arrived.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from service.store import Play

#: Seconds of a span that may be missing and still count as covered: segments meet with a
#: few milliseconds of rounding between them.
COVERAGE_SLACK_S = 0.25
#: MediaLive numbers a channel's archive segments from 1: nothing can arrive before it.
FIRST_SEQUENCE = 1


@dataclass(frozen=True)
class Coverage:
    """The stream time the stored segments cover, from (sequence, start_s, end_s) rows."""

    spans: tuple[tuple[float, float], ...]
    #: Stream time of the channel's first segment, when it is among the rows: nothing can
    #: come before it.
    origin_s: float | None = None

    @classmethod
    def of(cls, rows: list[tuple[int, float, float]]) -> Coverage:
        merged: list[tuple[float, float]] = []
        for _, start, end in sorted(rows, key=lambda r: r[1]):
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        first = [start for seq, start, _ in rows if seq <= FIRST_SEQUENCE]
        return cls(tuple(merged), min(first) if first else None)

    def longest_hole_s(self, lo_s: float, hi_s: float) -> float:
        """The longest stretch of [lo_s, hi_s] no segment covers (before the channel's first
        segment counts as covered)."""
        if self.origin_s is not None:
            lo_s = max(lo_s, self.origin_s)
        longest, at = 0.0, lo_s
        for start, end in self.spans:
            if end <= at:
                continue
            if start >= hi_s:
                break
            longest = max(longest, start - at)
            at = end
        return max(longest, hi_s - at)

    def covers(self, lo_s: float, hi_s: float) -> bool:
        return hi_s <= lo_s or self.longest_hole_s(lo_s, hi_s) <= COVERAGE_SLACK_S


@dataclass(frozen=True)
class Clock:
    """Now, and how long a play must have been in the log before missing segments around it
    are taken as lost."""

    now: datetime
    settle_s: float

    def settled(self, since: datetime | None) -> bool:
        """Whether `since` is at least the settle delay ago."""
        return since is not None and (self.now - since).total_seconds() >= self.settle_s

    def due(self, play: Play) -> bool:
        """Whether `play` has waited long enough for missing segments: to be announced, since
        it was first seen; once announced, to be ended, since it last changed."""
        return self.settled(play.updated_at if play.announced else play.created_at)

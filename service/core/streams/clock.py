"""Placing a segment on its stream's timeline.

MPEG-TS timestamps run on across a MediaLive channel's segments, so the audio PTS of a
segment's first sample is its place in the stream to the sample, whatever is missing before
it. The PTS is a 33-bit count of a 90 kHz clock and wraps every 26.5 hours; the sequence
number x the segment length says roughly where the segment is, which picks the right wrap.
Stream time is therefore the PTS unwrapped: any segment gives the same answer whichever
segment fixed the stream's reference (`epoch_s`), which keeps the log order-independent.
Without a PTS the sequence number alone places the segment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: The MPEG-TS clock's period (s): 2^33 ticks of 90 kHz.
PTS_WRAP_S = float(2**33) / 90_000.0


@dataclass(frozen=True)
class Placement:
    start_s: float
    placed_by: Literal["pts", "sequence"]


def pts_epoch(sequence: int, pts_s: float | None, segment_s: float) -> float:
    """The stream's reference: where sequence 0 would sit on the TS clock (0 without PTS)."""
    if pts_s is None:
        return 0.0
    # Centred on 0 rather than in [0, wrap): every segment of a stream yields nearly the same
    # value (segment lengths drift by milliseconds), and a value near 0 - the common case, a
    # clock that starts near 0 - must not land on both sides of a wrap boundary.
    return (pts_s - sequence * segment_s + PTS_WRAP_S / 2) % PTS_WRAP_S - PTS_WRAP_S / 2


def place_segment(
    sequence: int, pts_s: float | None, epoch_s: float, segment_s: float
) -> Placement:
    """Stream time (s) of a segment's first sample."""
    nominal = epoch_s + sequence * segment_s
    if pts_s is None:
        return Placement(nominal, "sequence")
    # The wrap of the PTS nearest to where the sequence number puts the segment.
    wraps = round((nominal - pts_s) / PTS_WRAP_S)
    return Placement(pts_s + wraps * PTS_WRAP_S, "pts")

"""The gaps a stream's segments leave do not depend on the order they arrive in
(core/streams/health.py gap_edits, with an in-memory store of segments and gaps)."""

from __future__ import annotations

import itertools
import random

import pytest

from service.core.streams.health import gap_edits
from service.store import StreamGap

SEGMENT_S = 12.0
DOWN_AFTER_S = 30.0


def true_holes(sequences: list[int]) -> list[tuple[float, float]]:
    """Holes of at least DOWN_AFTER_S between the segments, from the full picture."""
    spans = sorted((s * SEGMENT_S, s * SEGMENT_S + SEGMENT_S) for s in sequences)
    holes = []
    for (_, end), (start, _) in itertools.pairwise(spans):
        if start - end >= DOWN_AFTER_S:
            holes.append((end, start))
    return holes


def arrive(order: list[int]) -> list[tuple[float, float | None]]:
    """Apply each segment's edits as note_segment does; the final gaps."""
    stored: list[tuple[float, float]] = []
    gaps: dict[int, StreamGap] = {}
    next_id = itertools.count(1)
    for sequence in order:
        start, end = sequence * SEGMENT_S, sequence * SEGMENT_S + SEGMENT_S
        before = max((e for s, e in stored if s < start), default=None)
        after = min((s for s, _ in stored if s > start), default=None)
        stored.append((start, end))
        for edit in gap_edits(list(gaps.values()), before, after, start, end, DOWN_AFTER_S):
            if edit.remove:
                del gaps[edit.gap_id]
                continue
            gap_id = edit.gap_id if edit.gap_id is not None else next(next_id)
            gaps[gap_id] = StreamGap(gap_id, 1, edit.from_s, edit.to_s)
    return sorted((g.from_s, g.to_s) for g in gaps.values())


LAYOUTS = {
    "one hole": [0, 1, 2, 3, 4, 10, 11, 12, 13, 14],
    "two holes and a short one": [0, 1, 5, 6, 7, 9, 14, 15, 16, 30],
    "holes just over and under the bound": [0, 1, 5, 6, 8, 9],
}


@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_any_arrival_order_leaves_the_true_holes(layout: list[int]) -> None:
    expected = true_holes(layout)
    assert expected, "each layout has a hole"
    rng = random.Random(5)
    for _ in range(300):
        order = rng.sample(layout, len(layout))
        assert arrive(order) == expected, order


def test_an_open_gap_closes_at_the_first_audio_after_it() -> None:
    open_gap = StreamGap(7, 1, 60.0, None)
    (edit,) = gap_edits([open_gap], 60.0, None, 144.0, 156.0, DOWN_AFTER_S)
    assert (edit.gap_id, edit.from_s, edit.to_s, edit.remove) == (7, 60.0, 144.0, False)
    # A late segment from before the outage leaves it open.
    assert gap_edits([open_gap], 36.0, None, 48.0, 60.0, DOWN_AFTER_S) == []


def test_an_announced_gap_that_late_segments_fill_keeps_what_is_left() -> None:
    announced = StreamGap(3, 1, 60.0, 96.0, down_published=True, up_published=True)
    (edit,) = gap_edits([announced], 60.0, 96.0, 72.0, 84.0, DOWN_AFTER_S)
    assert not edit.remove and (edit.gap_id, edit.to_s - edit.from_s) == (3, 12.0)
    quiet = StreamGap(3, 1, 60.0, 96.0)
    (edit,) = gap_edits([quiet], 60.0, 96.0, 72.0, 84.0, DOWN_AFTER_S)
    assert edit.remove and edit.gap_id == 3

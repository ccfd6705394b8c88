"""Live streams, the pure parts: segment keys, the stream clock, window assembly, the log."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from service.audio.params import DEFAULT_PARAMS
from service.audio.peaks import Peaks
from service.core.streams.announce import Clock, Coverage
from service.core.streams.clock import PTS_WRAP_S, place_segment, pts_epoch
from service.core.streams.keys import BadStreamKey, SegmentKey, parse_segment_key
from service.core.streams.log import (
    LogParams,
    build_plays,
    ended_by_timeout,
    reconcile,
    settle,
)
from service.core.streams.windows import (
    COVERAGE_SLACK_S,
    WINDOW_HOP_S,
    WINDOW_S,
    WindowHit,
    hits_from_json,
    hits_to_json,
    pack_peaks,
    second_tier_peaks,
    unpack_peaks,
    window_covered_s,
    window_envelope,
    window_peaks,
    windows_touching,
)
from service.store import Play, StreamSegment

# --- keys -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("songs_to_check/streams/stream1.000123.ts", SegmentKey("stream1", 123)),
        ("songs_to_check/streams/stream1_hd.000123.ts", SegmentKey("stream1_hd", 123)),
        ("songs_to_check/streams/stream1/seg.000123.ts", SegmentKey("stream1", 123)),
        ("Songs_To_Check/Streams/Radio-One/x.y.000007.TS", SegmentKey("Radio-One", 7)),
        ("songs_to_check/streams/radio.one.1.aac", SegmentKey("radio.one", 1)),
    ],
)
def test_segment_keys_name_stream_and_sequence(key, expected):
    assert parse_segment_key(key) == expected


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("songs_to_check/streams/stream1.ts", "no sequence number"),
        ("songs_to_check/streams/stream1/seg.ts", "no sequence number"),
        ("songs_to_check/streams/a/b/seg.000001.ts", "expected streams/"),
        ("songs_to_check/streams//seg.000001.ts", "expected streams/"),
        ("songs_to_check/streams/.000001.ts", "stream name"),
        ("songs_to_check/streams/bad name/seg.000001.ts", "stream name"),
        ("songs_to_check/clip.000001.ts", "not under"),
    ],
)
def test_keys_without_a_stream_segment_are_refused_clearly(key, why):
    with pytest.raises(BadStreamKey, match=why) as raised:
        parse_segment_key(key)
    assert raised.value.permanent and raised.value.code == "bad_stream_key"


# --- clock ------------------------------------------------------------------------------------


def test_pts_places_segments_exactly_and_sequence_is_the_fallback():
    epoch = pts_epoch(10, 121.4, 12.0)
    assert place_segment(10, 121.4, epoch, 12.0).start_s == pytest.approx(121.4)
    # Segments of 11.9 s: the PTS wins over sequence x 12.
    assert place_segment(12, 145.2, epoch, 12.0).start_s == pytest.approx(145.2)
    fallback = place_segment(12, None, epoch, 12.0)
    assert fallback.placed_by == "sequence" and fallback.start_s == pytest.approx(145.4)


@pytest.mark.parametrize("first", [1, 500, 7999, 8000, 8010])
def test_the_pts_wrap_is_unwrapped_whichever_segment_came_first(first):
    """A clock starting 26 h in wraps around sequence 8000; every segment gets the same time
    whatever segment fixed the stream's reference."""
    start_pts = PTS_WRAP_S - 8000 * 12.0 + 3.0

    def pts(seq: int) -> float:
        return (start_pts + seq * 12.0 + 0.001 * (seq % 7)) % PTS_WRAP_S

    epoch = pts_epoch(first, pts(first), 12.0)
    times = [place_segment(s, pts(s), epoch, 12.0).start_s for s in (1, 7999, 8000, 8001, 9000)]
    assert np.diff(times) == pytest.approx([7998 * 12.0, 12.0, 12.0, 999 * 12.0], abs=0.01)
    reference = pts_epoch(1, pts(1), 12.0)
    assert times[2] == pytest.approx(place_segment(8000, pts(8000), reference, 12.0).start_s)


# --- windows ----------------------------------------------------------------------------------


def test_peaks_round_trip_through_their_blob():
    peaks = Peaks(
        np.array([0, 3, 3, 370], np.int32),
        np.array([13, 20, 480, 99], np.int32),
        np.array([6.5, 7.25, 30.0, 12.0], np.float32),
    )
    back = unpack_peaks(pack_peaks(peaks))
    for name in ("frames", "bins", "prominence_db"):
        np.testing.assert_array_equal(getattr(back, name), getattr(peaks, name))
    with pytest.raises(ValueError):
        unpack_peaks(pack_peaks(peaks)[:-1])


def test_windows_touching_a_segment_and_straddling_ones_join_both_sides():
    assert list(windows_touching(12.0, 24.0)) == [1, 2, 3, 4]
    frame_s = DEFAULT_PARAMS.frame_s
    n = round(12.0 / frame_s)

    def segment(seq: int, start: float) -> tuple[StreamSegment, Peaks]:
        frames = np.arange(0, n, 10, dtype=np.int32)
        peaks = Peaks(
            frames, np.full(len(frames), 50 + seq, np.int32), np.ones(len(frames), np.float32)
        )
        return StreamSegment(seq, f"k{seq}", start, 12.0, None, n, b""), peaks

    joined = window_peaks(2, [segment(1, 0.0), segment(2, 12.0)], DEFAULT_PARAMS)  # [10, 20) s
    seconds = joined.frames * frame_s
    assert seconds.min() >= 0 and seconds.max() < WINDOW_S
    # Seconds 10-12 come from the first segment, 12-20 from the second, on one frame grid.
    assert set(joined.bins[seconds < 2.0 - frame_s]) == {51}
    assert set(joined.bins[seconds > 2.0 + frame_s]) == {52}
    assert np.all(np.diff(joined.frames) >= 0)


def test_a_windows_second_tier_uses_each_segments_sustained_peaks_where_stored():
    def peaks(bin_: int) -> Peaks:
        return Peaks(np.array([5, 9], np.int32), np.full(2, bin_, np.int32), np.ones(2, np.float32))

    def segment(seq: int, sustained: bytes) -> StreamSegment:
        return StreamSegment(seq, f"k{seq}", 12.0 * seq, 12.0, None, 375, b"",
                             sustained_peaks=sustained)  # fmt: skip

    new = segment(1, pack_peaks(peaks(77)))
    old = segment(2, b"")  # stored before migration 0007
    chosen = second_tier_peaks([(new, peaks(50)), (old, peaks(60))])
    assert [s for s, _ in chosen] == [new, old]
    assert chosen[0][1].bins.tolist() == [77, 77]
    assert chosen[1][1].bins.tolist() == [60, 60]


def test_a_windows_envelopes_join_its_segments_on_one_frame_grid():
    frame_s = DEFAULT_PARAMS.frame_s
    n, bands = round(12.0 / frame_s), 24

    def segment(seq: int, start: float, fmt: int = 1) -> StreamSegment:
        values = np.full((n, bands), seq, dtype=np.int8)
        values[:, 0] = np.arange(n) % 100  # each frame's place in its segment
        blob = values.tobytes() if fmt else b""
        return StreamSegment(
            seq, f"k{seq}", start, 12.0, None, n, b"", fmt, bands if fmt else 0, blob
        )

    joined, fmt = window_envelope(2, [segment(1, 0.0), segment(2, 12.0)], DEFAULT_PARAMS)
    assert fmt == 1 and joined is not None
    assert joined.shape == (round(WINDOW_S / frame_s), bands)
    # [10, 20) s: seconds 10-12 from the first segment, 12-20 from the second, frame for frame.
    cut = round(2.0 / frame_s)
    assert set(joined[:cut, 1]) == {1} and set(joined[cut:, 1]) == {2}
    assert list(joined[cut : cut + 3, 0]) == [0, 1, 2]
    assert joined[cut - 1, 0] == (cut - 1 + round(10.0 / frame_s)) % 100
    # A window past the newest segment is padded with no change.
    tail, _ = window_envelope(3, [segment(1, 0.0), segment(2, 12.0)], DEFAULT_PARAMS)
    assert tail is not None and not tail[round(9.0 / frame_s) :].any()
    # A segment stored without envelopes, or with another format: the window has none.
    assert window_envelope(2, [segment(1, 0.0), segment(2, 12.0, 0)], DEFAULT_PARAMS) == (None, 0)
    assert window_envelope(2, [segment(1, 0.0), segment(2, 12.0, 2)], DEFAULT_PARAMS) == (None, 0)


def test_a_window_is_complete_once_every_second_of_it_has_arrived():
    """Only complete windows go past the first tier (the deeper tiers cost seconds per window
    at 100,000 songs); the ones reaching past the newest segment wait for the next."""

    def seg(seq: int, start: float, length: float = 12.0) -> StreamSegment:
        return StreamSegment(seq, f"k{seq}", start, length, None, 0, b"")

    first = [seg(1, 0.0)]
    assert window_covered_s(0, first) == pytest.approx(WINDOW_S)  # [0, 10)
    assert window_covered_s(1, first) == pytest.approx(7.0)  # [5, 15): 12-15 s still to come
    assert window_covered_s(-1, first) == pytest.approx(5.0)  # before the stream began
    both = [seg(1, 0.0), seg(2, 12.01)]  # segments meet with rounding between them
    assert window_covered_s(1, both) == pytest.approx(WINDOW_S - 0.01)
    assert window_covered_s(1, both) >= WINDOW_S - COVERAGE_SLACK_S
    gap = [seg(1, 0.0), seg(3, 24.0)]  # segment 2 lost
    assert window_covered_s(2, gap) == pytest.approx(2.0)  # [10, 20): 10-12 s only
    assert window_covered_s(4, gap) == pytest.approx(6.0)  # [20, 30): 24-30 s only


# --- the log ----------------------------------------------------------------------------------


def hit(song: int, start: float, song_pos: float, length: float = 9.5) -> WindowHit:
    return WindowHit(song, 60, 1.0, start, start + length, song_pos, 1.0)


def song_windows(song: int, start: float, end: float, song_start: float, skip=()) -> list:
    """Window hits of a song aired from `start` to `end` (stream s) from `song_start`."""
    out = []
    k = int(start // WINDOW_HOP_S)
    while k * WINDOW_HOP_S < end:
        w0 = k * WINDOW_HOP_S
        a, b = max(w0, start), min(w0 + WINDOW_S, end)
        if b - a >= 3 and not any(s <= w0 < e for s, e in skip):
            out.append((k, [WindowHit(song, 50, 1.0, a, b, song_start + a - start, 1.0)]))
        k += 1
    return out


PARAMS = LogParams()


def test_a_song_makes_one_play_with_its_span_and_song_offsets():
    (play,) = build_plays(song_windows(7, 12.3, 73.0, 40.0), PARAMS)
    assert (play.song_id, play.start_s, play.end_s) == (7, 12.3, 73.0)
    assert play.song_start_s == pytest.approx(40.0) and play.song_end_s == pytest.approx(100.7)
    assert play.status == "playing" and play.windows >= 10


def test_one_missing_segment_does_not_split_but_a_long_gap_or_a_jump_does():
    hole = song_windows(7, 0.0, 80.0, 0.0, skip=[(24.0, 36.0)])
    assert len(build_plays(hole, PARAMS)) == 1
    long_gap = song_windows(7, 0.0, 30.0, 0.0) + song_windows(7, 50.0, 90.0, 50.0)
    assert len(build_plays(long_gap, PARAMS)) == 2
    jump = song_windows(7, 0.0, 30.0, 0.0) + song_windows(7, 30.0, 60.0, 100.0)
    assert [p.song_start_s for p in build_plays(jump, PARAMS)] == [0.0, 100.0]


def test_chance_hits_and_talk_make_no_play():
    lone = [(3, [hit(9, 15.0, 80.0)])]  # one window by chance
    other_alignment = [(4, [hit(9, 20.0, 10.0)])]  # a second one elsewhere in the song
    assert build_plays([*lone, *other_alignment, (5, []), (6, [])], PARAMS) == []


def test_crossfaded_songs_both_play():
    windows = song_windows(1, 0.0, 42.0, 10.0) + song_windows(2, 40.0, 90.0, 0.0)
    assert [p.song_id for p in build_plays(windows, PARAMS)] == [1, 2]


NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
CLOCK = Clock(NOW, PARAMS.settle_s)
#: Every segment there: what in-order delivery gives.
ALL = Coverage(((-1000.0, 1000.0),))


def test_a_crossfade_or_a_cut_is_one_boundary_in_the_middle_with_the_overlap_stated():
    # Song 1 identified until 42.0, song 2 from 40.6 on: a crossfade, handed over at 41.3.
    fade = song_windows(1, 0.0, 42.0, 10.0) + song_windows(2, 40.6, 90.0, 0.0)
    a, b = build_plays(fade, PARAMS)
    assert a.end_s == b.start_s == pytest.approx(41.3)
    assert a.overlap_out_s == b.overlap_in_s == pytest.approx(1.4)
    assert (a.overlap_in_s, b.overlap_out_s) == (0.0, 0.0)
    # The songs keep their alignment: each boundary moved the song position with it.
    assert a.song_end_s == pytest.approx(10.0 + 41.3) and b.song_start_s == pytest.approx(0.7)
    # A cut the fingerprints place 1.5 s apart: one boundary between, no overlap.
    cut = song_windows(1, 0.0, 42.0, 10.0) + song_windows(2, 43.5, 90.0, 0.0)
    a, b = build_plays(cut, PARAMS)
    assert a.end_s == b.start_s == pytest.approx(42.75) and a.overlap_out_s == 0.0
    # A talk gap: each play keeps its own edge.
    gap = song_windows(1, 0.0, 42.0, 10.0) + song_windows(2, 45.0, 90.0, 0.0)
    a, b = build_plays(gap, PARAMS)
    assert (a.end_s, b.start_s) == (42.0, 45.0)


def stored(
    fields, play_id: int, status: str = "playing", *, announced: bool = True, age_s: float = 5.0
) -> Play:
    values = {k: getattr(fields, k) for k in fields.__dataclass_fields__}
    return Play(
        **{**values, "status": status, "announced": announced},
        id=play_id,
        stream_id=1,
        created_at=NOW - timedelta(seconds=age_s),
        updated_at=NOW - timedelta(seconds=age_s),
    )


def kinds(changes) -> list[tuple[str, int | None]]:
    return [(e[0], e[1]) for e in changes.events]


def test_reconcile_starts_then_ends_and_keeps_ids():
    (a,) = build_plays(song_windows(1, 0.0, 40.0, 0.0), PARAMS)
    first = reconcile([], [a], 41.0, PARAMS, ALL, CLOCK)
    assert [e[0] for e in first.events] == ["play.started"] and not first.changed_plays
    assert first.new_plays[0].announced
    (longer,) = build_plays(song_windows(1, 0.0, 45.0, 0.0), PARAMS)
    progress = reconcile([stored(a, 5)], [longer], 46.0, PARAMS, ALL, CLOCK)
    assert list(progress.changed_plays) == [5] and progress.events == []  # no event for progress
    done = reconcile([stored(longer, 5)], [longer], longer.end_s + 20, PARAMS, ALL, CLOCK)
    assert kinds(done) == [("play.ended", 5)]
    again = reconcile([stored(longer, 5, "ended")], [longer], 99.0, PARAMS, ALL, CLOCK)
    assert again.events == [] and again.changed_plays == {}


def test_every_correction_of_an_announced_start_is_announced():
    (a,) = build_plays(song_windows(1, 30.0, 60.0, 30.0), PARAMS)
    (earlier,) = build_plays(song_windows(1, 29.7, 60.0, 29.7), PARAMS)
    fixed = reconcile([stored(a, 8)], [earlier], 61.0, PARAMS, ALL, CLOCK)
    assert kinds(fixed) == [("play.updated", 8)]  # 0.3 s is a correction too
    assert fixed.changed_plays[8].start_s == 29.7
    ended = stored(a, 8, "ended")
    (shorter,) = build_plays(song_windows(1, 30.0, 59.5, 30.0), PARAMS)
    assert kinds(reconcile([ended], [shorter], 99.0, PARAMS, ALL, CLOCK)) == [("play.updated", 8)]


def test_a_play_is_not_announced_while_segments_before_it_are_missing():
    (piece,) = build_plays(song_windows(1, 60.0, 90.0, 60.0), PARAMS)
    # The segment before the piece has not arrived: a late one may show the song began earlier.
    hole = Coverage(((0.0, 48.0), (60.0, 100.0)))
    early = reconcile([], [piece], 100.0, PARAMS, hole, CLOCK)
    assert early.events == [] and not early.new_plays[0].announced
    # It arrives: the play's start moves, and only now is it announced, once.
    (whole,) = build_plays(song_windows(1, 50.0, 90.0, 50.0), PARAMS)
    late = reconcile([stored(piece, 4, announced=False)], [whole], 100.0, PARAMS, ALL, CLOCK)
    assert kinds(late) == [("play.started", 4)] and late.changed_plays[4].start_s == 50.0
    # Nor while the first 10 s of the play are incomplete.
    after = Coverage(((0.0, 65.0),))
    assert reconcile([], [piece], 65.0, PARAMS, after, CLOCK).events == []


def test_a_missing_segment_is_taken_as_lost_once_the_play_has_settled():
    (piece,) = build_plays(song_windows(1, 60.0, 90.0, 60.0), PARAMS)
    hole = Coverage(((0.0, 48.0), (60.0, 100.0)))
    young = stored(piece, 4, announced=False, age_s=PARAMS.settle_s - 1)
    assert reconcile([young], [piece], 100.0, PARAMS, hole, CLOCK).events == []
    old = stored(piece, 4, announced=False, age_s=PARAMS.settle_s)
    assert kinds(reconcile([old], [piece], 100.0, PARAMS, hole, CLOCK)) == [("play.started", 4)]


def test_nothing_precedes_a_channels_first_segment():
    (first,) = build_plays(song_windows(1, 0.5, 30.0, 20.0), PARAMS)
    start = Coverage.of([(1, 0.0, 12.0), (2, 12.0, 24.0)])
    assert kinds(reconcile([], [first], 24.0, PARAMS, start, CLOCK)) == [("play.started", None)]
    later = Coverage.of([(7, 0.0, 12.0), (8, 12.0, 24.0)])
    assert reconcile([], [first], 24.0, PARAMS, later, CLOCK).events == []


def test_merging_pieces_retracts_only_what_was_never_announced():
    (a,) = build_plays(song_windows(1, 30.0, 60.0, 30.0), PARAMS)
    (left,) = build_plays(song_windows(1, 0.0, 20.0, 0.0), PARAMS)
    (whole,) = build_plays(song_windows(1, 0.0, 60.0, 0.0), PARAMS)
    # The announced piece keeps its id, though the other overlaps the whole more.
    merged = reconcile(
        [stored(a, 8, announced=False), stored(left, 3)], [whole], 61.0, PARAMS, ALL, CLOCK
    )
    assert merged.changed_plays[8].status == "retracted"
    assert merged.changed_plays[3].end_s == 60.0
    assert merged.events == []  # no bill changed: the start stayed, the play still plays
    # Two announced pieces: the larger keeps its id, the other is retracted, and both say so.
    both = reconcile([stored(left, 3), stored(a, 8)], [whole], 61.0, PARAMS, ALL, CLOCK)
    assert both.changed_plays[3].status == "retracted"
    assert both.changed_plays[8].start_s == 0.0
    assert sorted(kinds(both)) == [("play.updated", 3), ("play.updated", 8)]


def test_a_play_ends_only_once_what_follows_it_has_arrived():
    (a,) = build_plays(song_windows(1, 0.0, 40.0, 0.0), PARAMS)
    hole_after = Coverage(((-100.0, 45.0), (57.0, 100.0)))
    waiting = reconcile([stored(a, 5)], [a], 100.0, PARAMS, hole_after, CLOCK)
    assert waiting.events == []
    # A hole 20 s past the end too: a hit there could still join the play (gap_s), and the
    # window that would show it is not complete.
    later_hole = Coverage(((-100.0, 60.0), (68.0, 100.0)))
    assert reconcile([stored(a, 5)], [a], 100.0, PARAMS, later_hole, CLOCK).events == []
    whole = reconcile([stored(a, 5)], [a], 100.0, PARAMS, ALL, CLOCK)
    assert kinds(whole) == [("play.ended", 5)]
    settled = stored(a, 5, age_s=PARAMS.settle_s)
    assert kinds(reconcile([settled], [a], 100.0, PARAMS, hole_after, CLOCK)) == [("play.ended", 5)]
    # The wait runs from the play's last change, not its first sighting: a long play that
    # grew a moment ago still waits for the segment after it.
    grown = replace(settled, updated_at=NOW - timedelta(seconds=1))
    assert reconcile([grown], [a], 100.0, PARAMS, hole_after, CLOCK).events == []


def test_plays_outside_a_recomputed_region_settle_by_the_same_rule():
    (piece,) = build_plays(song_windows(1, 60.0, 90.0, 60.0), PARAMS)
    hole = Coverage(((0.0, 48.0), (60.0, 200.0)))
    young = stored(piece, 4, announced=False, age_s=5.0)
    assert settle([young], 200.0, PARAMS, hole, CLOCK).events == []
    old = stored(piece, 4, announced=False, age_s=PARAMS.settle_s)
    # Waited long enough, and the stream is long past it: announced and ended at once.
    assert kinds(settle([old], 200.0, PARAMS, hole, CLOCK)) == [
        ("play.started", 4),
        ("play.ended", 4),
    ]
    # An announced play the stream has moved past, with all of what follows it there.
    assert kinds(settle([stored(piece, 7)], 200.0, PARAMS, ALL, CLOCK)) == [("play.ended", 7)]
    assert settle([stored(piece, 7)], 100.0, PARAMS, ALL, CLOCK).events == []


def test_idle_streams_end_their_current_plays_and_announce_the_rest_once():
    (a,) = build_plays(song_windows(1, 0.0, 40.0, 0.0), PARAMS)
    changes = ended_by_timeout(
        [stored(a, 2), stored(a, 3, "ended"), stored(a, 4, "ended", announced=False)]
    )
    assert list(changes.changed_plays) == [2, 4]
    assert kinds(changes) == [("play.ended", 2), ("play.started", 4), ("play.ended", 4)]


def test_window_hits_round_trip_as_json():
    hits = [hit(1, 3.5, 7.25), hit(2, 4.0, 0.5)]
    assert hits_from_json(hits_to_json(hits)) == hits


def test_a_song_matched_at_two_of_its_repeats_at_once_is_one_play():
    main = song_windows(4, 0.0, 60.0, 0.0)
    repeat = song_windows(4, 10.0, 30.0, 42.0)  # the same bars, 32 s later in the song
    (play,) = build_plays(main + repeat, PARAMS)
    assert (play.start_s, play.end_s, play.song_start_s) == (0.0, 60.0, 0.0)


def test_a_song_that_realigns_at_a_repeat_while_it_plays_stays_one_play():
    """Seen on the corpus program: the last windows of a song matched a repeated section (an
    alignment 20 s off) and overlapped the play so far; that is still one airing."""
    first = song_windows(5, 0.0, 33.0, 10.0)
    realigned = song_windows(5, 28.0, 53.0, 58.0)
    (play,) = build_plays(first + realigned, PARAMS)
    assert (play.start_s, play.end_s, play.song_start_s) == (0.0, 53.0, 10.0)
    assert play.song_end_s == pytest.approx(63.0)
    # Back to back without overlap they stay two plays (a jump, see above).
    assert (
        len(
            build_plays(
                song_windows(5, 0.0, 30.0, 10.0) + song_windows(5, 30.0, 60.0, 90.0), PARAMS
            )
        )
        == 2
    )


def test_hits_in_canonical_order_whatever_order_they_came_in():
    from service.core.streams.windows import _ordered
    from service.store import Hits

    assert len(_ordered(Hits.empty())) == 0  # a window whose lookup found nothing
    rng = np.random.default_rng(4)
    hits = Hits(*(rng.integers(0, 50, 400) for _ in range(4)))
    shuffled = rng.permutation(400)
    again = hits.select(shuffled)

    def rows(h: Hits) -> list[tuple[int, int, int]]:
        return list(zip(h.hashes.tolist(), h.song_ids.tolist(), h.offsets.tolist(), strict=True))

    assert rows(_ordered(hits)) == rows(_ordered(again)) == sorted(rows(hits))

"""Invariants of matching: voting, the chance model, speed variants, timelines."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from service.audio.hashes import landmark_hashes
from service.audio.params import DEFAULT_PARAMS
from service.audio.peaks import Peaks
from service.core.identify.timeline import WindowMatch, merge_windows
from service.match import (
    Match,
    MatchParams,
    QueryVariant,
    best_offsets,
    chance_log10_p,
    find_matches,
    merge_matches,
    refine_time_scale,
    search_matches,
    speed_search_needed,
    speed_variants,
    variant_of,
)
from service.store import Hits, LeftOut

P = DEFAULT_PARAMS


def _random_peaks(seed: int, seconds: float = 30.0, per_s: float = 20.0) -> Peaks:
    rng = np.random.default_rng(seed)
    n = int(seconds * per_s)
    frames = np.sort(rng.integers(0, int(seconds / P.frame_s), n)).astype(np.int32)
    bins = rng.integers(P.min_bin + 20, P.max_bin - 40, n).astype(np.int32)
    order = np.lexsort((bins, frames))
    return Peaks(frames[order], bins[order], np.ones(n, dtype=np.float32))


def _hits_of(song_id: int, peaks: Peaks) -> Hits:
    fp = landmark_hashes(peaks, P)
    n = len(fp)
    return Hits(fp.hashes, np.full(n, song_id), fp.offsets, np.full(n, peaks.frames.max() + 1))


def _concat(*hits: Hits) -> Hits:
    return Hits.concat(list(hits))


def _played_at(song: Peaks, speed: float, frames: int = 400) -> Peaks:
    """The first `frames` frames of `song` played `speed` times fast: times shrink,
    frequencies rise (peaks pushed above max_bin are lost)."""
    fast_frames = np.round(song.frames / speed).astype(np.int32)
    fast_bins = np.round(song.bins * speed).astype(np.int32)
    keep = (fast_bins <= P.max_bin) & (fast_frames < frames)
    return Peaks(fast_frames[keep], fast_bins[keep], song.prominence_db[keep])


def test_best_offsets_counts_a_three_bin_window():
    groups = np.array([7, 7, 7, 7, 7, 9, 9])
    delta = np.array([10, 10, 11, 40, 9, -5, -5])
    ids, best_delta, score, total = best_offsets(groups, delta)
    assert ids.tolist() == [7, 9]
    assert best_delta.tolist() == [10, -5]
    assert score.tolist() == [4, 2]  # 9, 10, 10, 11 lie within +-1 of 10
    assert total.tolist() == [5, 2]


def test_chance_probability_falls_with_score_and_rises_with_background():
    scores = np.array([3, 6, 12])
    p = chance_log10_p(scores, np.full(3, 200), np.full(3, 5000), 300, 1.0)
    assert np.all(np.diff(p) < 0)
    busier = chance_log10_p(scores, np.full(3, 2000), np.full(3, 5000), 300, 1.0)
    assert np.all(busier >= p)


def test_clip_of_a_song_matches_it_at_the_right_offset():
    song = _random_peaks(1, 60)
    other = _random_peaks(2, 60)
    hits = _concat(_hits_of(1, song), _hits_of(2, other))
    start = 500
    inside = (song.frames >= start) & (song.frames < start + 300)
    clip = Peaks(song.frames[inside] - start, song.bins[inside], song.prominence_db[inside])
    matches = find_matches(landmark_hashes(clip, P), hits, P, MatchParams())
    assert [m.song_id for m in matches] == [1]
    assert matches[0].song_offset_s == pytest.approx(start * P.frame_s, abs=P.frame_s)
    assert matches[0].speed == 1.0
    unknown = landmark_hashes(_random_peaks(3, 10), P)
    assert find_matches(unknown, hits, P, MatchParams()) == []


@pytest.mark.parametrize("speed", [0.95, 0.98, 1.03, 1.05])
def test_speed_variants_undo_a_speed_change(speed):
    song = _random_peaks(4, 40)
    hits = _hits_of(1, song)
    clip = _played_at(song, speed)
    plain = find_matches(landmark_hashes(clip, P), hits, P, MatchParams())
    variants = speed_variants(clip, MatchParams().speed_grid(), P)
    found = find_matches(variants, hits, P, MatchParams())
    assert found and found[0].song_id == 1
    assert found[0].speed == pytest.approx(speed, abs=0.006)
    assert found[0].song_offset_s == pytest.approx(0.0, abs=2 * P.frame_s)
    assert not plain or plain[0].score < found[0].score / 3


def test_a_match_at_another_speed_pays_the_speed_calibration() -> None:
    """The speed grid's matches are charged calibration_log10_speed on top of the rest; the
    clip's own speed is not."""
    song = _random_peaks(5, 40)
    hits = _hits_of(1, song)
    # A clip short enough (1.3 s) that its chance probability stays finite in float64.
    at_speed = speed_variants(_played_at(song, 1.03, frames=40), [1.03], P)
    plain, charged = MatchParams(calibration_log10_speed=0.0), MatchParams()
    assert charged.calibration_log10_speed > 0
    free = find_matches(at_speed, hits, P, plain)[0]
    paid = find_matches(at_speed, hits, P, charged)[0]
    assert np.isfinite(free.chance_log10)
    assert paid.score == free.score and paid.speed == pytest.approx(1.03)
    assert paid.chance_log10 == pytest.approx(free.chance_log10 + charged.calibration_log10_speed)
    # A clip at the song's own speed matches at 1.0: nothing extra.
    own = speed_variants(_played_at(song, 1.0, frames=40), [1.0], P)
    matched = find_matches(own, hits, P, charged)
    assert matched and matched == find_matches(own, hits, P, plain)


def test_a_match_chosen_from_more_speeds_than_it_was_found_at_pays_for_all_of_them() -> None:
    """The speed focus looks a few grid speeds up again, chosen by a search over all of them:
    its matches are charged for every speed searched, not just the ones voted on."""
    song = _random_peaks(6, 40)
    hits = _hits_of(1, song)
    at_speed = speed_variants(_played_at(song, 1.03, frames=40), [1.03], P)
    alone = find_matches(at_speed, hits, P, MatchParams())[0]
    chosen = find_matches(at_speed, hits, P, MatchParams(), speeds_tried=25)[0]
    assert np.isfinite(alone.chance_log10)
    assert chosen.score == alone.score and chosen.grid_speed == 1.03
    assert chosen.chance_log10 == pytest.approx(alone.chance_log10 + np.log10(25))
    # Fewer speeds tried than voted on changes nothing: the variants given were all tried.
    assert find_matches(at_speed, hits, P, MatchParams(), speeds_tried=0) == [alone]


def test_a_variant_analysed_from_later_in_the_clip_reports_the_clips_own_offset() -> None:
    """A hop phase's analysis starts `start_s` into the clip and counts its frames from
    there: its match places the clip's first sample, not the analysis's, and pays
    calibration_log10_phase, which the clip's own analysis does not."""
    song = _random_peaks(7, 40)
    hits = _hits_of(1, song)
    start = 200
    inside = (song.frames >= start) & (song.frames < start + 40)
    clip = Peaks(song.frames[inside] - start, song.bins[inside], song.prominence_db[inside])
    fp = landmark_hashes(clip, P)
    shift_s = 64 / P.sample_rate_hz
    own = find_matches([variant_of(fp)], hits, P, MatchParams())[0]
    later = find_matches([variant_of(fp, shift_s)], hits, P, MatchParams())[0]
    assert own.song_offset_s == pytest.approx(start * P.frame_s)
    assert later.song_offset_s == pytest.approx(own.song_offset_s - shift_s)
    assert later.query_start_s == pytest.approx(own.query_start_s + shift_s)
    assert later.query_end_s == pytest.approx(own.query_end_s + shift_s)
    assert later.score == own.score
    assert later.chance_log10 == pytest.approx(
        own.chance_log10 + MatchParams().calibration_log10_phase
    )


def test_four_aligned_frames_make_a_candidate_but_never_a_match() -> None:
    """A noisy clip's song may keep only four aligned frames: too few for a landmark match
    whatever the statistics say (min_score), enough to be one of the candidates the band
    envelopes are asked about (candidate_min_score)."""
    q_frames = np.array([10, 40, 70, 100], dtype=np.int32)
    hashes = np.array([1_001, 2_002, 3_003, 4_004], dtype=np.int32)
    variant = QueryVariant(1.0, hashes, q_frames, q_frames)
    aligned = Hits(hashes.astype(np.int64), np.full(4, 7), q_frames + 500, np.full(4, 3_000))
    # Another song shares three of the hashes at unrelated offsets: no candidate.
    stray = Hits(
        hashes[:3].astype(np.int64), np.full(3, 8), np.array([5, 900, 2_000]), np.full(3, 3_000)
    )
    hits = _concat(aligned, stray)
    found = search_matches([variant], hits, P, MatchParams(), candidates=3, weak_candidates=True)
    assert found.matches == []
    assert [(c.song_id, c.score) for c in found.candidates] == [(7, 4)]
    assert found.candidates[0].song_offset_s == pytest.approx(500 * P.frame_s)
    strict = search_matches(
        [variant], hits, P, MatchParams(candidate_min_score=5), candidates=3, weak_candidates=True
    )
    assert strict.candidates == []
    # Not asked for weak candidates (the speed grid's, which only choose speeds), or for no
    # candidates at all: none.
    assert search_matches([variant], hits, P, MatchParams(), candidates=3).candidates == []
    assert search_matches([variant], hits, P, MatchParams()).candidates == []


def test_weak_candidates_only_fill_the_places_the_others_leave() -> None:
    """A song with five aligned frames is a candidate before any of four, however improbable
    the four are; the four only take places left over, and change no match."""
    q_frames = np.arange(10, 100, 10, dtype=np.int32)
    hashes = np.arange(1_001, 1_001 + len(q_frames), dtype=np.int32)
    variant = QueryVariant(1.0, hashes, q_frames, q_frames)

    def aligned(song_id: int, n: int, at: int, song_frames: int) -> Hits:
        return Hits(
            hashes[:n].astype(np.int64),
            np.full(n, song_id),
            q_frames[:n] + at,
            np.full(n, song_frames),
        )

    # Song 9's five frames sit among thousands of chance hits, song 7's four alone in a short
    # song: 7 is the more improbable alignment.
    rng = np.random.default_rng(3)
    n = 5_000
    chance = Hits(
        rng.choice(hashes, n).astype(np.int64),
        np.full(n, 9),
        rng.integers(0, 60_000, n),
        np.full(n, 60_000),
    )
    hits = _concat(aligned(9, 5, 3_000, 60_000), chance, aligned(7, 4, 500, 1_000))
    found = search_matches([variant], hits, P, MatchParams(), candidates=3, weak_candidates=True)
    assert [c.song_id for c in found.candidates] == [9, 7]
    assert found.candidates[0].score >= 5 and found.candidates[1].score == 4
    assert found.candidates[1].chance_log10 < found.candidates[0].chance_log10
    one = search_matches([variant], hits, P, MatchParams(), candidates=1, weak_candidates=True)
    assert [c.song_id for c in one.candidates] == [9]
    strict = search_matches(
        [variant], hits, P, MatchParams(candidate_min_score=5), candidates=3, weak_candidates=True
    )
    assert strict.matches == found.matches


def test_hop_phase_shifts_split_a_hop_evenly() -> None:
    assert P.hop_phase_shifts() == [P.hop * k // P.query_hop_phases for k in (1, 2, 3)]
    assert replace(P, query_hop_phases=1).hop_phase_shifts() == []
    assert replace(P, query_hop_phases=2).hop_phase_shifts() == [P.hop // 2]
    assert P.hop_phase_shifts(8) == [P.hop * k // 8 for k in range(1, 8)]
    # Query-side only: the index format does not change with it.
    assert replace(P, query_hop_phases=1).version == P.version


def test_merging_two_searches_keeps_each_songs_more_improbable_match() -> None:
    def match(song_id: int, score: int, chance: float) -> Match:
        return Match(song_id, score, 1.0, 0.0, 0.0, 10.0, chance_log10=chance)

    grid = [match(1, 20, -12.0), match(2, 9, -6.0)]
    focus = [match(2, 30, -25.0), match(3, 8, -5.0), match(1, 18, -11.0)]
    merged = merge_matches(grid, focus, limit=5)
    assert merged == [focus[0], grid[0], focus[1]]
    assert merge_matches(grid, focus, limit=1) == [focus[0]]
    assert merge_matches([], [], limit=5) == []


def test_a_final_match_that_drifts_still_sends_the_clip_to_the_speed_grid() -> None:
    mp = MatchParams()

    def match(chance: float, speed: float = 1.0, grid: float = 1.0) -> Match:
        return Match(1, 11, 1.0, 0.0, 0.0, 10.0, speed, chance, grid)

    assert speed_search_needed([], mp)
    assert speed_search_needed([match(-5.0)], mp)  # not final
    assert not speed_search_needed([match(-10.5)], mp)
    assert not speed_search_needed([match(-10.5, 1.004)], mp)  # within a grid step
    # 1.3 % of drift at the clip's own speed: the grid holds a closer hypothesis.
    assert speed_search_needed([match(-10.5, 1.013)], mp)
    assert speed_search_needed([match(-10.5, 0.987)], mp)
    # Found by the grid already: nothing closer to look for.
    assert not speed_search_needed([match(-10.5, 1.013, 1.01)], mp)
    # Drifting, but too improbable for anything the grid could find to matter.
    assert not speed_search_needed([match(-20.5, 1.05)], mp)


def test_a_pitch_only_variant_undoes_a_pitch_shift_that_a_speed_variant_only_approximates():
    """A pitch shift scales frequencies and leaves times alone: re-hashed with frequencies
    scaled back and times kept, the clip's landmarks are the song's again, and the match
    reports the clip's true speed (1.0); a speed variant also scales the time differences, so
    only the short ones survive."""
    song = _random_peaks(12, 30)
    hits = _hits_of(1, song)
    bins = np.round(song.bins * 1.06).astype(np.int32)
    keep = (bins <= P.max_bin) & (song.frames < 400)
    clip = Peaks(song.frames[keep], bins[keep], song.prominence_db[keep])
    pitch = speed_variants(clip, [1.06], P, pitch_only=True)
    assert pitch[0].pitch_only and pitch[0].time_scale == 1.0
    found = find_matches(pitch, hits, P, MatchParams())
    assert found and found[0].song_id == 1 and found[0].grid_speed == 1.06
    assert found[0].speed == pytest.approx(1.0, abs=0.01)
    assert found[0].song_offset_s == pytest.approx(0.0, abs=2 * P.frame_s)
    approx = find_matches(speed_variants(clip, [1.06], P), hits, P, MatchParams())
    assert not approx or approx[0].score < 0.9 * found[0].score
    # At the clip's own factor a pitch-only variant is the plain one.
    assert not speed_variants(clip, [1.0], P, pitch_only=True)[0].pitch_only


def test_refine_time_scale_recovers_a_tempo_change():
    q = np.arange(0, 300, 3)
    db = np.round(120 + 0.95 * q)
    scales = 1.0 + 0.0025 * np.arange(-30, 31)
    s_idx, offset, score = refine_time_scale(db, q, scales)
    assert scales[s_idx] == pytest.approx(0.95, abs=0.003)
    assert offset == pytest.approx(120, abs=1)
    assert score == len(q)


def _window(start_s: float, song_id: int, song_pos: float, speed: float = 1.0) -> WindowMatch:
    return WindowMatch(start_s, Match(song_id, 20, 1.0, song_pos, 0.2, 9.8, speed))


def test_timeline_merges_consistent_windows_and_splits_on_change():
    windows = [
        _window(0, 1, 30.0),
        _window(5, 1, 35.0),
        _window(10, 1, 40.0),
        _window(15, 2, 0.0, 1.03),
        _window(20, 2, 5.15, 1.03),
        _window(25, 1, 90.0),  # song 1 again, elsewhere in the song: a new entry
        _window(30, 1, 95.0),
    ]
    entries = merge_windows(windows)
    assert [(e.song_id, e.start_s, e.end_s) for e in entries] == [
        (1, 0.2, 19.8),
        (2, 15.2, 29.8),
        (1, 25.2, 39.8),
    ]
    assert entries[0].song_start_s == pytest.approx(30.2)
    assert entries[1].speed == pytest.approx(1.03)
    assert entries[0].score == 60


def test_a_stray_aligned_hash_does_not_stretch_the_reported_span() -> None:
    from service.match.scoring import covered_span

    frames = np.array([40, 300, 310, 318, 330, 345, 352, 360, 371, 380])
    # 260 frames (8.3 s) between the stray hash at 40 and the rest: left out at a 94-frame gap.
    assert covered_span(frames, 94.0) == (300, 380)
    assert covered_span(frames, 300.0) == (40, 380)
    assert covered_span(np.array([7]), 94.0) == (7, 7)


def test_the_frequent_hash_cap_scales_with_the_catalogue() -> None:
    """The cap is a multiple of the catalogue's mean postings per hash value, so the same
    share of a clip's hashes is skipped at any size, with a floor for small catalogues."""
    params = MatchParams(frequent_hash_factor=50.0, frequent_hash_min=20)
    assert params.max_postings(0) == 20
    assert params.max_postings(3_600_000) == 22  # the 8-h corpus: 0.43 postings per hash
    assert params.max_postings(444_000_000) == 2647  # 10,000 four-minute songs
    assert MatchParams().max_postings(444_000_000) == 530  # the default: 10x
    assert MatchParams(frequent_hash_factor=0).max_postings(10**9) is None


def test_a_variant_cap_leaves_out_frequent_hashes_whatever_the_hits_hold() -> None:
    """Speed variants vote only with hashes under their cap, even when the hits given to the
    matcher hold more (fetched for the clip's own speed under a looser cap): the same matches
    as if those hashes had not been in the variant at all."""
    song = _random_peaks(6, 40)
    clip = _played_at(song, 1.03)
    grid = [1.0, 1.03]
    plain = speed_variants(clip, grid, P)
    # A third of the speed variant's hashes made frequent: 30 postings each in song 9, one of
    # them aligned with the clip, so that song 9 matches whenever they count.
    third = np.arange(len(plain[1].hashes)) % 3 == 0
    frequent, at = plain[1].hashes[third], plain[1].offsets[third].astype(np.int64)
    rng = np.random.default_rng(0)
    filler = Hits(
        np.repeat(frequent, 30),
        np.full(30 * len(frequent), 9),
        np.column_stack([at + 100, rng.integers(0, 1900, (len(frequent), 29))]).ravel(),
        np.full(30 * len(frequent), 2000),
    )
    hits = _concat(_hits_of(1, song), filler)
    capped = speed_variants(clip, grid, P, max_postings=20)
    assert capped[0].max_postings is None and capped[1].max_postings == 20
    counts = np.searchsorted(np.sort(hits.hashes), capped[1].hashes, "right") - np.searchsorted(
        np.sort(hits.hashes), capped[1].hashes
    )
    under = counts <= 20
    assert 0 < under.sum() < len(under)
    without = [
        plain[0],
        QueryVariant(
            1.03,
            plain[1].hashes[under],
            plain[1].offsets[under],
            plain[1].query_frames[under],
        ),
    ]
    found = find_matches(capped, hits, P, MatchParams())
    assert found and found[0].song_id == 1 and found[0].speed == pytest.approx(1.03)
    assert found == find_matches(without, hits, P, MatchParams())
    assert 9 not in {m.song_id for m in found}
    assert 9 in {m.song_id for m in find_matches(plain, hits, P, MatchParams())}


def test_pairing_variants_a_few_at_a_time_changes_no_answer(monkeypatch):
    """A speed search's pairs are built a chunk of variants at a time to bound memory; since
    every group the matcher reduces is one song under one variant, the chunks must give the
    very matches and chance figures (the count of candidate songs included) of one pass."""
    import service.match.pairs as matching

    songs = [_random_peaks(s, 40) for s in (3, 4, 5, 6)]
    hits = [_hits_of(i + 1, p) for i, p in enumerate(songs)]
    all_hits = _concat(*hits)
    clip = _played_at(songs[2], 1.02, frames=300)
    variants = speed_variants(clip, MatchParams().speed_grid(), P)
    one_pass = find_matches(variants, all_hits, P, MatchParams(max_matches=4))
    monkeypatch.setattr(matching, "_PAIRS_PER_CHUNK", 50)
    assert len(matching._Pairing(variants, all_hits).chunks(50)) > 10
    chunked = find_matches(variants, all_hits, P, MatchParams(max_matches=4))
    assert one_pass and one_pass[0].song_id == 3
    assert chunked == one_pass
    # One variant with more pairs than a chunk holds (a second tier's dense landmarks) is
    # paired a share of the songs at a time, and its matches do not change either.
    own = speed_variants(_played_at(songs[2], 1.0, frames=300), [1.0], P)
    widest = int(matching._Pairing(own, all_hits).counts[0].sum())
    assert widest > 3 * 8
    monkeypatch.setattr(matching, "_PAIRS_PER_CHUNK", 1 << 40)
    whole = find_matches(own, all_hits, P, MatchParams(max_matches=4))
    monkeypatch.setattr(matching, "_PAIRS_PER_CHUNK", 8)
    assert whole and whole[0].song_id == 3
    assert find_matches(own, all_hits, P, MatchParams(max_matches=4)) == whole


def test_pruning_unpromising_groups_changes_no_match_or_candidate(monkeypatch) -> None:
    """Before the exact reductions, groups that cannot reach a match's floor within the
    drift band, nor a weak candidate's within one bin and its neighbours, are dropped: the
    matches and candidates must be those of voting on every pair."""
    import service.match.search as search
    import service.match.votes as votes

    # A song played 3 % faster without a pitch change: many votes, drifting along the clip
    # (by 9 frames over 10 s), found by refinement for a residual time scale.
    song = _random_peaks(12, seconds=40.0, per_s=30.0)
    frames = np.round(song.frames / 1.03).astype(np.int32)
    early = frames < int(10.0 / P.frame_s)
    fast = Peaks(frames[early], song.bins[early], song.prominence_db[early])
    variant = variant_of(landmark_hashes(fast, P))
    rng = np.random.default_rng(5)
    parts = []
    # Chance: 300 short songs holding the clip's hashes at random offsets, dense enough that
    # nearly all of them could drift into a match's floor, and dozens reach a candidate's.
    n = 45_000
    parts.append(
        Hits(
            rng.choice(variant.hashes, n).astype(np.int64),
            rng.integers(100, 400, n),
            rng.integers(0, 2_000, n),
            np.full(n, 2_000),
        )
    )
    # Weak songs: four of the clip's hashes aligned at one offset (7, 8), over one bin and its
    # neighbours (9), or drifting further (10, 11).
    spreads = {
        7: [0, 0, 0, 0],
        8: [0, 0, 0, 0],
        9: [0, 0, 1, 2],
        10: [0, 4, 8, 12],
        11: [0, 1, 2, 3],
    }
    for song_id, drift in spreads.items():
        picked = rng.choice(len(variant.hashes), 4, replace=False)
        frames = variant.offsets[picked].astype(np.int64)
        parts.append(
            Hits(
                variant.hashes[picked].astype(np.int64),
                np.full(4, song_id),
                frames + 1_000 * song_id + np.array(drift),
                np.full(4, 20_000),
            )
        )
    parts.append(_hits_of(20, song))
    hits = _concat(*parts)
    query = [variant]
    mp = MatchParams()
    promising = votes._promising
    # Narrowed as soon as one promising group is left out (a catalogue's worth of them).
    monkeypatch.setattr(votes, "_NARROW_FROM_PAIRS", 0)
    narrowed = []
    alike = search._narrowed_alike

    def spy(*args):
        narrowed.append(alike(*args))
        return narrowed[-1]

    monkeypatch.setattr(search, "_narrowed_alike", spy)
    pruned = search_matches(query, hits, P, mp, candidates=12, weak_candidates=True)
    assert narrowed == [True]  # the narrow votes served
    # When the rows kept cannot fill the refinement's places, the votes are collected again.
    few = replace(mp, refine_top=500)
    assert search_matches(query, hits, P, few, candidates=12, weak_candidates=True)
    assert narrowed == [True, False]
    monkeypatch.setattr(votes, "_promising", lambda p, *a: np.ones(len(p.song), dtype=bool))
    whole = search_matches(query, hits, P, mp, candidates=12, weak_candidates=True)
    assert pruned == whole
    assert whole.matches and whole.matches[0].song_id == 20
    # Below the threshold nothing is left out: the votes are those of every group.
    monkeypatch.setattr(votes, "_promising", promising)
    monkeypatch.setattr(votes, "_NARROW_FROM_PAIRS", 1 << 40)
    monkeypatch.setattr(search, "_narrowed_alike", spy)
    narrowed.clear()
    assert search_matches(query, hits, P, mp, candidates=12, weak_candidates=True) == whole
    assert narrowed == [True]
    # Nor do they depend on how many pairs are voted at a time (which pairs share a chunk).
    import service.match.pairs as pairs

    monkeypatch.setattr(pairs, "_PAIRS_PER_CHUNK", 997)
    assert search_matches(query, hits, P, mp, candidates=12, weak_candidates=True) == whole
    assert {7, 8, 9} <= {c.song_id for c in whole.candidates}


def test_a_song_whose_promising_groups_were_left_out_is_no_candidate() -> None:
    """Voting on every promising group, a song is represented by its promising group (even
    one scoring under the candidates' floor) rather than by a weak one: when the narrow votes
    left its promising groups out, the weak row that stands in for it is dropped."""
    import service.match.search as search
    from service.match.votes import Votes

    e = np.empty(0, dtype=np.int64)
    songs = np.arange(1, 11)
    # Songs 1-8 promising with 6 votes, 9 weak with 4, 10 weak with 4 but shadowed.
    best = search._Best(
        songs=songs,
        variant=np.zeros(10, dtype=np.int64),
        delta=np.zeros(10, dtype=np.int64),
        score=np.array([6] * 8 + [4, 4]),
        total=np.full(10, 20),
        scale=np.ones(10),
        promising=np.arange(8),
    )
    votes = Votes(e, e, e, e, e, e, 10, None, np.array([10]))
    assert search._narrowed_alike(votes, best, floor=4, refine_top=8)
    assert best.songs.tolist() == list(range(1, 10))
    assert best.promising.tolist() == list(range(8))
    # Fewer rows than the refinement's places: what was left out might have been re-voted.
    assert not search._narrowed_alike(votes, best, floor=4, refine_top=9)
    # Nothing left out: the narrow votes serve as they are.
    assert search._narrowed_alike(replace(votes, shadowed=None), best, floor=4, refine_top=50)


@pytest.mark.parametrize("seed", range(5))
def test_best_offsets_agree_with_counting_each_bin(seed: int) -> None:
    """Whatever the spread of groups and offsets (the key is packed as narrow as they allow),
    each group's best bin is the one whose window (it and its neighbours) holds most votes,
    ties to the bin with most votes of its own, then to the earliest."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 3000))
    groups = rng.integers(0, 40, n) * int(rng.choice([1, 9, 1_000_003]))
    delta = rng.integers(-12, 13, n) + int(rng.integers(-(10**6), 10**6))
    ids, best_delta, score, total = best_offsets(groups, delta)
    for g, d, s, t in zip(ids, best_delta, score, total, strict=True):
        mine = delta[groups == g]
        bins = {b: int((mine == b).sum()) for b in np.unique(mine)}
        windows = {b: sum(bins.get(b + k, 0) for k in (-1, 0, 1)) for b in bins}
        want = min(bins, key=lambda b: (-windows[b], -bins[b], b))
        assert (d, s, t) == (want, windows[want], len(mine))
    assert sorted(ids.tolist()) == sorted(set(groups.tolist()))


def test_a_hash_over_a_variants_cap_stays_out_when_the_songs_are_paired_in_shares(
    monkeypatch,
) -> None:
    """A variant's cap (QueryVariant.max_postings) is judged on all the hits: a variant with
    more pairs than a chunk holds is paired a share of the songs at a time, and a hash over
    the cap must not slip in because each share holds fewer of its postings."""
    import service.match.pairs as pairs

    hashes = np.array([7, 8, 9], dtype=np.int32)
    frames = np.array([0, 10, 20], dtype=np.int32)
    variant = QueryVariant(1.0, hashes, frames, frames, max_postings=3)
    # Hash 7 is stored by four songs (over the cap of 3), hashes 8 and 9 once each.
    hits = Hits(
        np.array([7, 7, 7, 7, 8, 9], dtype=np.int64),
        np.array([0, 1, 2, 3, 4, 5], dtype=np.int64),
        np.array([100, 200, 300, 400, 110, 120], dtype=np.int64),
        np.full(6, 1_000, dtype=np.int64),
    )

    def paired() -> list[tuple[int, int]]:
        return sorted(
            (int(h), int(q))
            for v, q, h in pairs._pair_indices([variant], hits, None)
            for h, q in zip(h, q, strict=True)
        )

    whole = paired()
    assert whole == [(4, 1), (5, 2)]
    monkeypatch.setattr(pairs, "_PAIRS_PER_CHUNK", 1)
    assert paired() == whole


def test_postings_a_budget_left_out_count_as_chance_votes() -> None:
    """A lookup under a budget keeps a query's rarest hashes: their few hits alone make a
    chance alignment of six of them look far more improbable than it is among every hit the
    query's hashes bring. Counting the postings the budget left out as the chance votes
    they would have brought (each song its share, by length) judges it as with every hash
    looked up, while a true alignment still stands out."""
    rng = np.random.default_rng(12)
    query_frames, song_frames, common = 300, 5000, 1000
    rare = np.arange(2000, 2066, dtype=np.int32)
    # The query: 66 rare hashes every 4 frames, and a common hash at every frame.
    q_rare = np.arange(66) * 4
    variant = QueryVariant(
        1.0,
        np.concatenate([rare, np.full(query_frames, common, np.int32)]),
        np.concatenate([q_rare, np.arange(query_frames)]),
        np.concatenate([q_rare, np.arange(query_frames)]),
    )

    def hits_of(song: int, hashes: np.ndarray, frames: np.ndarray) -> Hits:
        n = len(hashes)
        return Hits(hashes, np.full(n, song), frames, np.full(n, song_frames))

    # Song 1 shares six rare hashes with the query at one offset (similar music), song 2
    # holds the clip (all 66 at offset 1,000); each holds the common hash 40 times.
    chance = hits_of(1, rare[:6], 3000 + q_rare[:6])
    true = hits_of(2, rare, 1000 + q_rare)
    commons = [hits_of(s, np.full(40, common), rng.integers(0, song_frames, 40)) for s in (1, 2)]
    everything = Hits.concat([chance, true, *commons])
    budgeted = Hits.concat([chance, true])
    left_out = LeftOut(np.array([common]), np.array([80]), catalogue_frames=2 * song_frames)
    mp = MatchParams()

    def songs(hits: Hits) -> list[int]:
        return [m.song_id for m in find_matches([variant], hits, P, mp)]

    assert songs(everything) == [2]
    assert sorted(songs(budgeted)) == [1, 2]  # the budget alone: fooled
    assert songs(replace(budgeted, left_out=left_out)) == [2]
    # Song 1's chance figure is then about the one every hit gives it, not ten orders lower.
    figures = []
    for hits in (everything, replace(budgeted, left_out=left_out)):
        found = search_matches([variant], hits, P, mp, candidates=2).candidates
        figures.append(next(m.chance_log10 for m in found if m.song_id == 1))
    assert figures[1] >= figures[0] - 1.0


def test_a_completed_song_is_judged_on_its_own_left_out_postings() -> None:
    """A song whose left-out postings were fetched after all (a query completing its
    candidates) holds them among its hits: the chance model counts those, not its share of
    what the budget left out, so that its figure is the one every hit gives it, while the
    songs not completed still get their share."""
    song_frames, common = 5000, 1000
    rare = np.arange(2000, 2066, dtype=np.int32)
    q_rare = np.arange(66) * 4
    q_common = np.arange(10) * 30
    offsets = np.concatenate([q_rare, q_common])
    variant = QueryVariant(
        1.0, np.concatenate([rare, np.full(10, common, np.int32)]), offsets, offsets
    )

    def hits_of(song: int, hashes: np.ndarray, frames: np.ndarray) -> Hits:
        n = len(hashes)
        return Hits(hashes, np.full(n, song), frames, np.full(n, song_frames))

    # Song 2 holds the clip (30 rare hashes aligned) and the common hash 200 times (its
    # texture), songs 1 and 3 align 12 rare hashes by chance and hold the common hash 10
    # times each; the budget left the common hash's 220 postings out.
    rng = np.random.default_rng(5)
    aligned = [
        hits_of(song, rare[first : first + n], start + q_rare[first : first + n])
        for song, first, n, start in ((1, 0, 12, 3000), (2, 12, 30, 1000), (3, 42, 12, 2000))
    ]
    commons = {
        s: hits_of(s, np.full(n, common), rng.integers(0, song_frames, n))
        for s, n in ((1, 10), (2, 200), (3, 10))
    }
    everything = Hits.concat([*aligned, *commons.values()])
    left_out = LeftOut(np.array([common]), np.array([220]), catalogue_frames=3 * song_frames)
    budgeted = replace(Hits.concat(aligned), left_out=left_out)
    completed = replace(
        Hits.concat([*aligned, commons[2]]),
        left_out=replace(left_out, completed=((np.array([2]), np.array([common])),)),
    )
    mp = MatchParams()

    def figures(hits: Hits) -> dict[int, float]:
        found = search_matches([variant], hits, P, mp, candidates=3).candidates
        return {m.song_id: m.chance_log10 for m in found}

    full, partial, done = figures(everything), figures(budgeted), figures(completed)
    assert done[2] == pytest.approx(full[2], abs=1e-9)
    # Its share by length (a third of 2,200 pairs) is far from its own 2,000 pairs.
    assert partial[2] < full[2] - 3.0
    assert done[1] == pytest.approx(partial[1], abs=1e-9) and done[1] < -1.0
    assert done[3] == pytest.approx(partial[3], abs=1e-9)

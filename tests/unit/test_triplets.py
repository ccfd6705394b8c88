"""The "fp2" triplet hashes: invariance to time scale and pitch shift, the hash layout, the
index format's version, and the vote that recovers a clip's time scale and offset."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import numpy as np
import pytest

from service.audio.hashes import HASH_SPACE, landmark_hashes
from service.audio.params import DEFAULT_PARAMS, TripletParams, params_for_format
from service.audio.peaks import Peaks, thin_peaks
from service.audio.triplets import (
    TRIPLET_HASH_SPACE,
    TRIPLET_TAG,
    _span_cells,
    check_layout,
    form_triplets,
    index_fingerprints,
    span_cell,
    triplet_hashes,
    unpack_triplet_hashes,
)
from service.core.identify.lookups import HitCache, PostingsCaps
from service.core.identify.tiers import Ladder, TierQuery, deeper_tiers, triplet_tier
from service.core.identify.triplet_votes import prefer_scaled, triplet_search, triplets_needed
from service.match import Match, MatchParams, Search, scale_variants
from service.match.votes import aligning_groups
from service.store import Hits, LeftOut

FP2 = params_for_format("fp2")
TP = TripletParams()


def _peaks(frames: list[int], bins: list[int]) -> Peaks:
    f = np.array(frames, dtype=np.int32)
    b = np.array(bins, dtype=np.int32)
    order = np.lexsort((b, f))
    return Peaks(f[order], b[order], np.ones(len(f), dtype=np.float32))


def _random_song(seed: int, seconds: float = 40.0, per_s: float = 12.0) -> Peaks:
    rng = np.random.default_rng(seed)
    n = int(seconds * per_s)
    frames = rng.integers(0, int(seconds / FP2.frame_s), n)
    bins = rng.integers(FP2.min_bin + 10, 300, n)
    return _peaks(frames.tolist(), bins.tolist())


@pytest.mark.parametrize(
    ("time_scale", "pitch_ratio"),
    [(1.1, 1.0), (1.0, 1.1), (1.1, 1.1), (0.9, 1.0), (1.0, 0.9), (0.9, 0.9), (1.0, 1.0)],
)
def test_a_triplets_hash_survives_time_scaling_and_pitch_shifting(
    time_scale: float, pitch_ratio: float
) -> None:
    # Coordinates chosen so the changed triplet lands on whole frames and bins: the hash of
    # the original must be among the query's hashes of the changed one.
    frames, bins = [0, 10, 30], [100, 150, 200]
    original = _peaks(frames, bins)
    changed = _peaks(
        [round(f * time_scale) for f in frames], [round(b * pitch_ratio) for b in bins]
    )
    stored = triplet_hashes(original, TP, FP2.min_bin)
    assert len(stored) == 1
    query = triplet_hashes(changed, TP, FP2.min_bin, query=True)
    assert stored.hashes[0] in set(query.hashes.tolist())
    assert set(query.offsets.tolist()) == {0}


def test_the_hash_sees_the_shape_of_a_triplet() -> None:
    base = triplet_hashes(_peaks([0, 10, 30], [100, 150, 200]), TP, FP2.min_bin).hashes
    other_ratio = triplet_hashes(_peaks([0, 20, 30], [100, 150, 200]), TP, FP2.min_bin).hashes
    other_interval = triplet_hashes(_peaks([0, 10, 30], [100, 120, 200]), TP, FP2.min_bin).hashes
    other_band = triplet_hashes(_peaks([0, 10, 30], [50, 75, 100]), TP, FP2.min_bin).hashes
    # The same gap ratio and intervals, twice as long: another span cell.
    other_span = triplet_hashes(_peaks([0, 20, 60], [100, 150, 200]), TP, FP2.min_bin).hashes
    found = {base[0], other_ratio[0], other_interval[0], other_band[0], other_span[0]}
    assert len(found) == 5


def test_a_query_probes_the_span_cell_its_triplet_was_stored_in() -> None:
    """Both recordings round each peak to a frame, so a stored span lies within a frame of the
    song's true span and a query's within a frame of that span scaled: at every time scale
    within +-10 %, every stored span's cell must be among the cells the query probes."""
    true_span = np.arange(TP.min_span_frames - 1.0, TP.max_span_frames + 1.0, 0.02)
    scale = np.linspace(0.9, 1.1, 41)[:, None, None, None]
    nudge = np.arange(-2, 3)
    stored = np.floor(true_span)[None, :, None, None] + nudge[None, None, :, None]
    queried = np.floor(scale * true_span[None, :, None, None]) + nudge[None, None, None, :]
    reachable = (
        (np.abs(stored - true_span[None, :, None, None]) <= 1.0)
        & (np.abs(queried - scale * true_span[None, :, None, None]) <= 1.0)
        & (stored >= TP.min_span_frames)
        & (stored <= TP.max_span_frames)
    )
    stored, queried = np.broadcast_arrays(stored, queried)
    stored, queried = stored[reachable], queried[reachable]
    low, high = _span_cells(queried, TP, query=True)
    cell = span_cell(stored, TP)
    assert len(cell) > 100_000
    assert ((low <= cell) & (cell <= high)).all()
    assert (high - low <= 1).all()
    # Stored 27 frames, a query 10 % fast rounded the other way: 23.
    low, high = _span_cells(np.array([23.0]), TP, query=True)
    assert low[0] <= span_cell(np.array([27.0]), TP)[0] <= high[0]


def test_the_layout_refuses_a_span_window_wider_than_two_cells() -> None:
    with pytest.raises(ValueError, match="span"):
        check_layout(replace(TP, query_scale_tolerance=0.5))


def test_pack_and_unpack_round_trip() -> None:
    peaks = _random_song(1)
    fp = triplet_hashes(peaks, TP, FP2.min_bin)
    assert len(fp) > 1000
    assert fp.hashes.dtype == np.int32 and fp.offsets.dtype == np.int32
    ratio, span, d_b, d_c, band = unpack_triplet_hashes(fp.hashes)
    a, b, c = form_triplets(peaks, TP)
    pitch = 12.0 * np.log2(peaks.bins.astype(np.float64))
    half = round(TP.max_interval_semitones / TP.interval_step_semitones)
    inside = (np.abs(pitch[b] - pitch[a]) <= TP.max_interval_semitones) & (
        np.abs(pitch[c] - pitch[a]) <= TP.max_interval_semitones
    )
    a, b, c = a[inside], b[inside], c[inside]
    f = peaks.frames.astype(np.float64)
    np.testing.assert_array_equal(
        ratio, np.floor((f[b] - f[a]) / (f[c] - f[a]) * TP.ratio_cells).astype(np.int64)
    )
    np.testing.assert_array_equal(
        d_b, np.floor((pitch[b] - pitch[a]) / TP.interval_step_semitones + half + 0.5)
    )
    np.testing.assert_array_equal(
        d_c, np.floor((pitch[c] - pitch[a]) / TP.interval_step_semitones + half + 0.5)
    )
    assert band.min() >= 0 and band.max() < 16
    per_cell = np.log(TP.max_span_frames / TP.min_span_frames) / TP.span_cells
    expected_span = np.floor(
        np.clip(np.log((f[c] - f[a]) / TP.min_span_frames) / per_cell, 0, TP.span_cells - 1e-9)
    )
    np.testing.assert_array_equal(span, expected_span.astype(np.int64))
    assert span.min() >= 0 and span.max() < TP.span_cells
    np.testing.assert_array_equal(fp.offsets, peaks.frames[a])


def test_triplets_and_landmarks_never_share_a_hash_value() -> None:
    fp = index_fingerprints(_random_song(2), FP2)
    triplet = (fp.hashes & TRIPLET_TAG) != 0
    assert triplet.any() and (~triplet).any()
    assert (fp.hashes[~triplet] < HASH_SPACE).all() and (fp.hashes[~triplet] >= 0).all()
    assert ((fp.hashes[triplet] & (TRIPLET_TAG - 1)) < TRIPLET_HASH_SPACE).all()
    assert (np.diff(fp.offsets) >= 0).all()


def test_triplet_zone_and_fan_out_bound_the_triplets() -> None:
    peaks = _random_song(3)
    a, b, c = form_triplets(peaks, TP)
    f = peaks.frames
    assert ((f[b] - f[a]) >= TP.min_gap_frames).all()
    assert ((f[b] - f[a]) <= TP.max_first_gap_frames).all()
    assert ((f[c] - f[a]) >= TP.min_span_frames).all()
    assert ((f[c] - f[a]) <= TP.max_span_frames).all()
    assert ((f[c] - f[b]) >= TP.min_gap_frames).all()
    assert np.bincount(a).max() <= TP.first_fan_out * TP.second_fan_out
    qa, _, _ = form_triplets(peaks, TP, query=True)
    assert len(qa) > len(a)


def test_the_index_format_is_in_the_version() -> None:
    assert DEFAULT_PARAMS.version.startswith("fp1-")
    assert FP2.version.startswith("fp2-")
    assert FP2.format == "fp2" and DEFAULT_PARAMS.format == "fp1"
    # Query-side tunables are not part of the format; index-side ones are.
    wider = replace(FP2, triplets=replace(TP, query_first_fan_out=9))
    assert wider.version == FP2.version
    denser = replace(FP2, triplets=replace(TP, first_fan_out=4))
    assert denser.version != FP2.version
    with pytest.raises(ValueError):
        params_for_format("fp9")  # type: ignore[arg-type]


def _stored_hits(song_id: int, peaks: Peaks) -> Hits:
    fp = triplet_hashes(peaks, TP, FP2.min_bin)
    n = len(fp)
    return Hits(fp.hashes, np.full(n, song_id), fp.offsets, np.full(n, peaks.frames.max() + 1))


@pytest.mark.parametrize("time_scale", [0.9, 0.95, 1.0, 1.04, 1.1])
def test_the_vote_recovers_a_clips_time_scale_and_offset(time_scale: float) -> None:
    song = _random_song(4, seconds=60.0)
    other = _random_song(5, seconds=60.0)
    start = 500  # frames into the song
    # The clip: 10 s of song from `start`, played time_scale times fast (times shrink,
    # frequencies rise with a speed change).
    inside = (song.frames >= start) & (song.frames < start + round(312 * time_scale))
    clip = _peaks(
        np.round((song.frames[inside] - start) / time_scale).astype(int).tolist(),
        np.round(song.bins[inside] * time_scale).astype(int).tolist(),
    )
    mine, others = _stored_hits(1, song), _stored_hits(2, other)
    hits = Hits(
        np.concatenate([mine.hashes, others.hashes]),
        np.concatenate([mine.song_ids, others.song_ids]),
        np.concatenate([mine.offsets, others.offsets]),
        np.concatenate([mine.song_frames, others.song_frames]),
    )
    query = triplet_hashes(clip, TP, FP2.min_bin, query=True)
    matches = triplet_search(query, hits, FP2, MatchParams()).matches
    assert matches and matches[0].song_id == 1
    assert matches[0].speed == pytest.approx(time_scale, abs=0.006)
    assert matches[0].song_offset_s == pytest.approx(start * FP2.frame_s, abs=2 * FP2.frame_s)
    assert all(m.song_id != 2 for m in matches)


def _match(song_id: int, speed: float, chance_log10: float, score: int = 50) -> Match:
    """A landmark match (found at the clip's own speed, drifting to `speed`)."""
    return Match(song_id, score, 1.0, 12.0, 0.0, 10.0, speed, chance_log10, grid_speed=1.0)


def test_the_triplets_are_asked_only_when_the_landmarks_leave_a_doubt() -> None:
    mp = MatchParams()
    assert triplets_needed([], mp)
    assert not triplets_needed([_match(1, 1.0, -40.0)], mp)
    assert not triplets_needed([_match(1, 1.03, -40.0)], mp)  # drifting, but beyond doubt
    assert triplets_needed([_match(1, 1.0, -5.0)], mp)  # inconclusive
    assert triplets_needed([_match(1, 1.02, -15.0)], mp)  # drifting, not improbable enough
    # At the edge of the landmarks' residual time scales the true scale may lie beyond.
    assert triplets_needed([_match(1, 1.0 + mp.time_scale_range, -40.0)], mp)


def test_a_song_the_triplets_found_takes_their_match() -> None:
    mp = MatchParams()
    landmarks = [_match(1, 1.07, -30.0, score=45), _match(2, 1.0, -12.0, score=20)]
    scaled = [_match(1, 1.1, -25.0, score=40)]
    merged = prefer_scaled(landmarks, scaled, mp)
    assert [(m.song_id, m.speed) for m in merged] == [(1, 1.1), (2, 1.0)]


def test_every_fine_time_scale_lies_within_half_a_coarse_step_of_the_coarse_grid() -> None:
    for mp in (MatchParams(), MatchParams(triplet_coarse_scale_step=0.03)):
        for step in (mp.triplet_coarse_scale_step, mp.triplet_coarser_scale_step):
            coarse = np.array(mp.triplet_coarse_scales(step))
            for scale in mp.triplet_scales():
                assert np.abs(coarse - scale).min() <= step / 2 + 1e-9


def _catalogue_hits(songs: list[Peaks]) -> Hits:
    parts = [_stored_hits(i + 1, song) for i, song in enumerate(songs)]
    return Hits.concat(parts)


@pytest.mark.parametrize("time_scale", [0.89, 0.93, 0.99, 1.0, 1.015, 1.07, 1.11])
def test_the_coarse_pass_changes_no_match(time_scale: float) -> None:
    """Voted first under the coarse grid, the fine grid runs on the songs that could align
    only: the matches, their confidences included, are those of the fine grid alone."""
    songs = [_random_song(seed, seconds=60.0) for seed in range(10, 22)]
    song = songs[3]
    start = 400
    inside = (song.frames >= start) & (song.frames < start + round(312 * time_scale))
    clip = _peaks(
        np.round((song.frames[inside] - start) / time_scale).astype(int).tolist(),
        np.round(song.bins[inside] * time_scale).astype(int).tolist(),
    )
    hits = _catalogue_hits(songs)
    query = triplet_hashes(clip, TP, FP2.min_bin, query=True)
    with_pass = triplet_search(query, hits, FP2, MatchParams()).matches
    one_pass = triplet_search(query, hits, FP2, MatchParams(triplet_coarser_scale_step=0.0)).matches
    without = triplet_search(query, hits, FP2, MatchParams(triplet_coarse_scale_step=0.0)).matches
    assert with_pass and with_pass[0].song_id == 4
    assert with_pass == one_pass == without


def test_the_coarse_pass_leaves_out_the_songs_no_scale_aligns() -> None:
    """A clip of none of the songs: the coarse pass keeps none of the songs its hashes met,
    yet counts all of them (the chance model's candidates)."""
    songs = [_random_song(seed, seconds=60.0) for seed in range(30, 36)]
    hits = _catalogue_hits(songs)
    clip = _random_song(99, seconds=10.0, per_s=14.0)
    query = triplet_hashes(clip, TP, FP2.min_bin, query=True)
    mp = MatchParams()
    coarse = scale_variants(query, mp.triplet_coarse_scales())
    aligning, met = aligning_groups(coarse, hits, drift_frames=6, min_votes=mp.min_score)
    assert met == len(np.unique(hits.song_ids[np.isin(hits.hashes, query.hashes)]))
    assert met > 0
    assert len(aligning.songs) < met
    assert aligning.allowed.shape == (len(aligning.songs), len(coarse))
    assert triplet_search(query, hits, FP2, mp).matches == []


class _RecordingStore:
    """The one Store method the triplet tier calls, over fixed hits; records each lookup's
    budget and, like the stores, keeps the rarest hashes while their postings fit it and says
    which it left out."""

    def __init__(self, hits: Hits) -> None:
        self.hits = hits
        self.budgets: list[int | None] = []

    async def lookup(
        self, hashes: np.ndarray, max_postings: int | None = None, max_hits: int | None = None
    ) -> Hits:
        self.budgets.append(max_hits)
        found = self.hits.select(np.isin(self.hits.hashes, hashes))
        if max_hits is None or len(found) <= max_hits:
            return found
        # The rarest hashes first while their postings fit, ties by hash, as the stores.
        distinct, postings = np.unique(found.hashes, return_counts=True)
        order = np.lexsort((distinct, postings))
        fits = np.zeros(len(distinct), dtype=bool)
        fits[order] = np.cumsum(postings[order]) <= max_hits
        kept = found.select(np.isin(found.hashes, distinct[fits]))
        frames = int(np.unique(self.hits.song_frames).sum())  # songs of distinct lengths
        left_out = LeftOut(distinct[~fits], postings[~fits], frames)
        return replace(kept, left_out=left_out)


def _triplet_tier_of_a_clip(
    max_hits_triplets: int, cache_budget: int | None, others: int = 0, **match: object
) -> tuple[_RecordingStore, list[Match]]:
    """The triplet tier of a 10-s clip of song 1 of a catalogue (that song and `others`
    more), under these budgets and MatchParams: the store (with the budget of each lookup)
    and the matches."""
    song = _random_song(4, seconds=60.0)
    inside = song.frames < 312
    clip = _peaks(song.frames[inside].tolist(), song.bins[inside].tolist())
    more = [_random_song(40 + i, seconds=50.0 + i) for i in range(others)]
    store = _RecordingStore(_catalogue_hits([song, *more]))
    mp = MatchParams(max_hits_triplets=max_hits_triplets, **match)  # type: ignore[arg-type]
    ladder = Ladder(PostingsCaps(None, None, None), mp, FP2)
    query = TierQuery(peaks=clip, second_tier=lambda: index_fingerprints(clip, FP2))
    cache = HitCache(store, max_hits=cache_budget)
    return store, asyncio.run(triplet_tier(cache, query, ladder))


def test_the_triplets_lookup_keeps_to_its_budget() -> None:
    store, matches = _triplet_tier_of_a_clip(150_000, None)
    assert store.budgets == [150_000]
    assert matches and matches[0].song_id == 1


def test_what_the_triplets_budget_left_out_is_asked_when_the_rest_decides_nothing() -> None:
    # Five postings make no candidate to complete.
    store, matches = _triplet_tier_of_a_clip(5, 1_000_000, others=3)
    assert store.budgets == [5, 1_000_000]
    assert matches and matches[0].song_id == 1


def test_the_triplets_candidates_are_completed_before_anything_else_is_asked() -> None:
    """A clip whose rarest triplets only rank its song among the candidates: the postings the
    budget left out are fetched for the candidates alone, and that settles the clip (no
    lookup of every hash left out); the match has the votes it has with no budget at all, and
    its figure differs only by the songs the family-wise correction counts (fewer met)."""
    store, matches = _triplet_tier_of_a_clip(20, 1_000_000, others=3)
    assert store.budgets == [20, None]
    assert matches and matches[0].song_id == 1
    unbudgeted = _triplet_tier_of_a_clip(1_000_000, 1_000_000, others=3)[1]
    assert matches[0].score == unbudgeted[0].score
    # The same figure but for the songs counted as candidates (fewer met under the budget).
    assert matches[0].chance_log10 == pytest.approx(unbudgeted[0].chance_log10, abs=1.0)
    # Without completing, the hashes left out are asked whole.
    store, matches = _triplet_tier_of_a_clip(20, 1_000_000, others=3, complete_candidates=0)
    assert store.budgets == [20, 1_000_000]
    assert matches and matches[0].song_id == 1


def test_only_the_completed_songs_are_voted_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Completion changes no other song's votes or chance: the search after it votes the
    completed songs' hits alone, counting the songs the first search met, and finds the
    matches a vote of every hit finds here (fewer songs than MatchParams.refine_top are
    promising, so both refine the same ones)."""
    from service.core.identify import tiers

    searches: list[tuple[Hits, int]] = []

    def recording(fingerprints, hits, params, mp, candidates=0, songs_voted=0):  # type: ignore[no-untyped-def]
        searches.append((hits, songs_voted))
        return triplet_search(fingerprints, hits, params, mp, candidates, songs_voted)

    monkeypatch.setattr(tiers, "triplet_search", recording)
    store, matches = _triplet_tier_of_a_clip(20, 1_000_000, others=3)
    assert store.budgets == [20, None]
    (first, _), (again, counted) = searches
    met = set(np.unique(first.song_ids).tolist())
    completed = set(np.unique(again.song_ids).tolist())
    assert completed == {1} and len(met) > 1
    assert counted == len(met)
    everything = Hits.concat([first.select(~np.isin(first.song_ids, list(completed))), again])
    song = _random_song(4, seconds=60.0)
    clip = _peaks(song.frames[song.frames < 312].tolist(), song.bins[song.frames < 312].tolist())
    query = triplet_hashes(thin_peaks(clip, FP2), TP, FP2.min_bin, query=True)
    mp = MatchParams(max_hits_triplets=20)
    whole = triplet_search(query, replace(everything, left_out=again.left_out), FP2, mp, 8)
    assert matches == whole.matches


def test_the_triplets_match_outlives_the_second_tier() -> None:
    """A clip played 6 % fast whose triplets find its song, not beyond doubt: the second
    tier's landmarks, which do not search that time scale, find nothing, and the triplets'
    match is still the answer."""
    songs = [_random_song(seed, seconds=60.0) for seed in (4, 40, 41, 42)]
    song, time_scale, start = songs[0], 1.06, 500
    inside = (song.frames >= start) & (song.frames < start + round(312 * time_scale))
    clip = _peaks(
        np.round((song.frames[inside] - start) / time_scale).astype(int).tolist(),
        np.round(song.bins[inside] * time_scale).astype(int).tolist(),
    )
    store = _RecordingStore(_catalogue_hits(songs))
    # Nothing is final, so that every tier runs.
    mp = MatchParams(accept_without_speed_search_log10=-1e9)
    ladder = Ladder(PostingsCaps(None, None, None), mp, FP2)
    query = TierQuery(peaks=clip, second_tier=lambda: landmark_hashes(clip, FP2.for_queries()))
    asked: list[np.ndarray] = []
    lookup = store.lookup

    async def recording(hashes: np.ndarray, *args: int | None) -> Hits:
        asked.append(np.asarray(hashes))
        return await lookup(hashes, *args)

    store.lookup = recording  # type: ignore[method-assign]
    matches = asyncio.run(deeper_tiers(store, HitCache(store), query, [], ladder))  # type: ignore[arg-type]
    # The second tier did look its landmarks up (hashes without the triplets' tag).
    assert any(((a & TRIPLET_TAG) == 0).any() for a in asked)
    assert matches and matches[0].song_id == 1
    assert matches[0].speed == pytest.approx(time_scale, abs=0.01)


def test_a_second_tier_that_settles_the_clip_outweighs_the_triplets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Triplet votes and landmark votes are not counted alike: when the second tier settles
    the clip, its match is the answer, whatever the triplets' inconclusive match scored;
    when it settles nothing, the triplets' match stays."""
    from service.core.identify import tiers

    mp = MatchParams()
    triplets = [_match(7, 1.0, -4.0, score=30)]
    monkeypatch.setattr(tiers, "triplet_tier", lambda *_: _returning(triplets))
    ladder = Ladder(PostingsCaps(None, None, None), mp, FP2)
    clip = _random_song(4, seconds=10.0)
    query = TierQuery(peaks=clip, second_tier=lambda: landmark_hashes(clip, FP2.for_queries()))

    def second_tier_finds(found: list[Match]) -> list[Match]:
        monkeypatch.setattr(tiers, "_search", lambda *_: _returning(Search(found, [], 10)))
        return asyncio.run(deeper_tiers(None, None, query, [], ladder))  # type: ignore[arg-type]

    settled = second_tier_finds([_match(3, 1.0, -12.0, score=12)])
    assert [m.song_id for m in settled] == [3]
    weak = second_tier_finds([_match(3, 1.0, -3.0, score=6)])
    assert [m.song_id for m in weak] == [7, 3]


async def _returning(value: object) -> object:
    return value

"""Confirming undecided candidates from band envelopes, through each real store: songs
indexed from encoded files, a noisy clip encoded as MP3, the envelopes read back by range."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from service.audio.analysis import AnalysedAudio, analyse_file, analyse_query
from service.audio.params import DEFAULT_PARAMS
from service.core.identify.envelope_confirm import confirm_by_envelope, drop_contradicted
from service.core.identify.identify import identify_file
from service.core.index import IndexOptions, index_analysed, index_path
from service.core.streams.segment import SegmentArrival, StreamParams, add_segment
from service.core.streams.windows import hits_from_json, pack_peaks
from service.executor import CpuPool
from service.match import Match, MatchParams
from service.match.envelopes import EnvelopeCheckParams
from service.settings import Settings
from service.store import EnvelopeRange, NewSong, Song, SongMeta, Store, create_store
from tests.audio_fixtures import SYNTH_RATE_HZ, encode, synth_song

CLIP_START_S = 30.0


def _candidate(song_id: int, offset_s: float) -> Match:
    """A landmark candidate that did not beat chance."""
    return Match(
        song_id=song_id,
        score=6,
        confidence=0.2,
        song_offset_s=offset_s,
        query_start_s=0.0,
        query_end_s=10.0,
        chance_log10=-0.1,
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("envelopes")
    song = synth_song(41, 80.0)
    other = synth_song(42, 80.0)
    clip = song[int(CLIP_START_S * SYNTH_RATE_HZ) :][: 10 * SYNTH_RATE_HZ].astype(np.float64)
    # Another song over it, 3 dB louder than the music: few landmarks survive.
    noise = synth_song(43, 10.0).astype(np.float64)[: len(clip)]
    noise *= np.sqrt((clip**2).mean() / (noise**2).mean()) * 10 ** (3 / 20)
    mixed = (clip + noise) / np.abs(clip + noise).max() * 0.8
    return {
        "song": encode(song, folder / "song", "mp3"),
        "other": encode(other, folder / "other", "ogg"),
        "clip": encode(mixed.astype(np.float32), folder / "clip", "mp3_64k"),
    }


@asynccontextmanager
async def _song_other_and_clip(
    store_url: str, files: dict[str, Path]
) -> AsyncIterator[tuple[Store, Song, Song, AnalysedAudio]]:
    """A store holding the fixture's song and other song, and the clip analysed as a query."""
    store = create_store(Settings(database_url=store_url), DEFAULT_PARAMS.version)
    await store.open()
    try:
        song, _ = await index_analysed(
            store, analyse_file(files["song"], DEFAULT_PARAMS), SongMeta("Song"), "song.mp3"
        )
        other, _ = await index_analysed(
            store, analyse_file(files["other"], DEFAULT_PARAMS), SongMeta("Other"), "other.ogg"
        )
        yield store, song, other, analyse_file(files["clip"], DEFAULT_PARAMS.for_queries())
    finally:
        await store.close()


async def test_the_envelopes_confirm_the_true_candidate_only(
    store_url: str, files: dict[str, Path]
) -> None:
    async with _song_other_and_clip(store_url, files) as (store, song, other, clip):
        params = MatchParams()

        async def check(candidates: list[Match], p: MatchParams = params) -> Match | None:
            return await confirm_by_envelope(
                store, clip.envelope, clip.envelope_format, candidates, DEFAULT_PARAMS, p
            )

        # The right song at the right offset, ranked behind a wrong song: confirmed.
        candidates = [_candidate(other.id, 12.0), _candidate(song.id, CLIP_START_S)]
        confirmed = await check(candidates)
        assert confirmed is not None
        assert confirmed.song_id == song.id and confirmed.evidence == "envelope"
        assert confirmed.confidence >= params.min_confidence
        assert confirmed.song_offset_s == CLIP_START_S

        # The right song at a wrong offset, or only wrong songs: nothing.
        for wrong in (
            [_candidate(song.id, CLIP_START_S + 17.0)],
            [_candidate(other.id, CLIP_START_S)],
        ):
            assert await check(wrong) is None

        # Switched off, or a candidate at another speed: not checked.
        off = replace(params, envelope_check=None)
        assert await check(candidates, off) is None
        fast = [replace(_candidate(song.id, CLIP_START_S), speed=1.04, grid_speed=1.04)]
        assert await check(fast) is None


async def test_candidates_of_other_hop_phases_are_checked_and_pay_for_it(
    store_url: str, files: dict[str, Path]
) -> None:
    """A clip analysed at other hop phases (catalogue.identify_analysed) brings candidates of
    its own: checked beside the clip's, each against its own range of its song's envelopes
    (one song can be a candidate at two offsets), at MatchParams.calibration_log10_phase
    more, and not twice when the clip's own analysis found the same one."""
    async with _song_other_and_clip(store_url, files) as (store, song, other, clip):
        params = MatchParams()

        async def check(own: list[Match], phases: list[Match]) -> Match | None:
            return await confirm_by_envelope(
                store, clip.envelope, clip.envelope_format, own, DEFAULT_PARAMS, params, phases
            )

        # (Far enough apart that neither range holds enough of the other's clip.)
        right, elsewhere = _candidate(song.id, CLIP_START_S), _candidate(song.id, 79.0)
        for own, phases in (([elsewhere], [right]), ([right], [elsewhere])):
            confirmed = await check(own, phases)
            assert confirmed is not None and confirmed.song_id == song.id
            assert confirmed.song_offset_s == CLIP_START_S

        wrong = _candidate(other.id, 12.0)
        as_own = await check([wrong, right], [])
        as_phase = await check([wrong], [right])
        assert as_own is not None and as_phase is not None
        assert as_phase.chance_log10 == pytest.approx(
            as_own.chance_log10 + params.calibration_log10_phase
        )
        # Found by both analyses (offsets a few ms apart): tried once, as the clip's own.
        again = replace(right, song_offset_s=CLIP_START_S + 0.01)
        alone = await check([right], [])
        assert alone is not None
        assert await check([right], [again]) == alone


async def test_a_candidate_of_fewer_frames_than_a_match_needs_pays_for_it(
    store_url: str, files: dict[str, Path]
) -> None:
    """Candidates with fewer aligned frames than a landmark match needs
    (MatchParams.candidate_min_score below min_score) come from clips whose song left almost
    nothing, and from every clip of nothing in the catalogue: such a candidate is confirmed
    only at EnvelopeCheckParams.calibration_log10_weak more, and the others are judged as if
    no weak one had been tried."""
    async with _song_other_and_clip(store_url, files) as (store, song, other, clip):
        params = MatchParams()

        async def check(candidate: Match, p: MatchParams = params) -> Match | None:
            return await confirm_by_envelope(
                store, clip.envelope, clip.envelope_format, [candidate], DEFAULT_PARAMS, p
            )

        right = _candidate(song.id, CLIP_START_S)
        weak = replace(right, score=params.min_score - 1)
        strong, faint = await check(right), await check(weak)
        assert strong is not None and faint is not None and faint.song_id == song.id
        assert faint.chance_log10 == pytest.approx(
            strong.chance_log10 + EnvelopeCheckParams().calibration_log10_weak
        )
        # Charged enough, the same envelopes no longer confirm it.
        assert params.envelope_check is not None
        over = -strong.chance_log10 - 2 + 0.5  # past min_confidence 0.99 by half a decade
        costly = replace(
            params, envelope_check=replace(params.envelope_check, calibration_log10_weak=over)
        )
        assert await check(right, costly) == strong
        assert await check(weak, costly) is None
        assert await check(replace(weak, song_id=other.id)) is None
        # Weak candidates only add answers: the others are judged as if none had been tried.
        beside = await confirm_by_envelope(
            store,
            clip.envelope,
            clip.envelope_format,
            [right, replace(weak, song_id=other.id, song_offset_s=12.0)],
            DEFAULT_PARAMS,
            params,
        )
        assert beside == strong


async def test_landmarks_that_beat_chance_need_less_of_the_envelopes(
    store_url: str, files: dict[str, Path]
) -> None:
    """A candidate whose landmarks beat chance on their own (the speed grid, which replaced
    them, found nothing better) is answered once its envelopes agree at corroborate_z,
    below what the envelopes alone need; one that does not beat chance, or has fewer aligned
    frames than a match needs, is not."""
    async with _song_other_and_clip(store_url, files) as (store, song, other, clip):
        # Envelopes alone confirm nothing here: only corroboration can answer.
        strict = EnvelopeCheckParams(min_z=99.0)

        async def check(candidate: Match, check: EnvelopeCheckParams) -> Match | None:
            return await confirm_by_envelope(
                store,
                clip.envelope,
                clip.envelope_format,
                [candidate],
                DEFAULT_PARAMS,
                MatchParams(envelope_check=check),
            )

        beaten = replace(_candidate(song.id, CLIP_START_S), confidence=0.995, chance_log10=-2.3)
        answer = await check(beaten, strict)
        assert answer == beaten  # its own confidence and evidence: the landmarks'
        assert answer.evidence == "landmarks"
        assert await check(_candidate(song.id, CLIP_START_S), strict) is None
        # At a wrong offset, or a wrong song: the envelopes do not agree.
        assert await check(replace(beaten, song_offset_s=CLIP_START_S + 17.0), strict) is None
        assert await check(replace(beaten, song_id=other.id), strict) is None
        assert await check(beaten, replace(strict, corroborate_z=99.0)) is None
        # Too few aligned frames for a landmark match, however improbable: nothing to agree with.
        assert await check(replace(beaten, score=MatchParams().min_score - 1), strict) is None


async def test_weak_matches_the_envelopes_contradict_are_dropped(
    store_url: str, files: dict[str, Path]
) -> None:
    async with _song_other_and_clip(store_url, files) as (store, song, other, clip):
        params = MatchParams()

        async def kept(matches: list[Match], p: MatchParams = params) -> list[Match]:
            return await drop_contradicted(
                store, clip.envelope, clip.envelope_format, matches, DEFAULT_PARAMS, p
            )

        def weak(song_id: int, offset_s: float, chance: float = -4.0) -> Match:
            return replace(_candidate(song_id, offset_s), confidence=0.9999, chance_log10=chance)

        right, wrong = weak(song.id, CLIP_START_S), weak(other.id, 12.0, -5.0)
        # Beating chance narrowly, a wrong song whose rhythm the clip does not follow goes;
        # the right one stays, whatever their order.
        assert await kept([wrong, right]) == [right]
        assert await kept([right, wrong]) == [right]
        # The right song at a wrong offset is no better than a wrong song.
        assert await kept([weak(song.id, CLIP_START_S + 17.0)]) == []
        # A song with no envelopes (indexed before them) cannot be contradicted.
        unknown = weak(song.id + other.id + 1000, 3.0)
        assert await kept([unknown]) == [unknown]
        # A settled clip (its best match final) is not checked, nor anything with the check
        # switched off.
        final = replace(wrong, chance_log10=-12.0)
        assert await kept([final, right]) == [final, right]
        assert await kept([wrong], replace(params, envelope_check=None)) == [wrong]
        assert await kept([]) == []


SONG_SEEDS = (41, 42, 44, 45)


def _drowned(samples: np.ndarray, noise_seed: int, over_db: float) -> np.ndarray:
    """`samples` under another synthesized song `over_db` louder."""
    music = samples.astype(np.float64)
    noise = synth_song(noise_seed, len(music) / SYNTH_RATE_HZ).astype(np.float64)
    noise *= np.sqrt((music**2).mean() / (noise**2).mean()) * 10 ** (over_db / 20)
    return music + noise


@asynccontextmanager
async def _catalogue(
    store_url: str, tmp_path: Path
) -> AsyncIterator[tuple[Store, CpuPool, list[np.ndarray], list[int]]]:
    """A store holding four 80-s songs indexed from MP3 (samples and ids in SONG_SEEDS order)."""
    songs = [synth_song(seed, 80.0) for seed in SONG_SEEDS]
    store = create_store(Settings(database_url=store_url), DEFAULT_PARAMS.version)
    await store.open()
    pool = CpuPool(1, use_processes=False)
    try:
        ids = []
        for i, samples in enumerate(songs):
            path = encode(samples, tmp_path / f"song{i}", "mp3")
            options = IndexOptions(SongMeta(f"S{i}"))
            indexed = await index_path(store, pool, path, options, params=DEFAULT_PARAMS)
            ids.append(indexed.song.id)
        yield store, pool, songs, ids
    finally:
        pool.close()
        await store.close()


async def test_identify_answers_a_clip_only_the_envelopes_decide(
    store_url: str, tmp_path: Path
) -> None:
    """Through the use case, as the API and the worker call it: a clip drowned 16 dB under
    another song keeps too few landmarks for them to beat chance; the envelopes confirm the
    song they ranked first. With the check switched off the clip gets no answer. (At 12 and
    14 dB the second tier's sustained peaks find it by landmarks alone.)"""
    async with _catalogue(store_url, tmp_path) as (store, pool, songs, ids):
        mixed = _drowned(songs[0][30 * SYNTH_RATE_HZ :][: 10 * SYNTH_RATE_HZ], 47, 16.0)
        clip = (mixed / np.abs(mixed).max() * 0.8).astype(np.float32)
        clip_file = encode(clip, tmp_path / "clip", "mp3_64k")
        result = await identify_file(store, pool, clip_file, MatchParams(), DEFAULT_PARAMS)
        assert [m.song.id for m in result.matches] == [ids[0]]
        best = result.matches[0].match
        assert best.evidence == "envelope"
        assert best.song_offset_s == pytest.approx(30.0, abs=0.1)
        assert best.confidence >= 0.99

        off = await identify_file(
            store, pool, clip_file, MatchParams(envelope_check=None), DEFAULT_PARAMS
        )
        assert off.matches == []


async def test_a_long_files_windows_are_confirmed_too(store_url: str, tmp_path: Path) -> None:
    """A 70-s file: 30 s of one song, then 40 s of another drowned 18 dB under a third. The
    landmarks alone find the drowned song in a few windows only; with the windows' envelopes
    checked the timeline covers seconds more of it (39 s against 23 s on a 2-core machine;
    at 16 dB the second tier's sustained peaks find it all by landmarks alone)."""
    async with _catalogue(store_url, tmp_path) as (store, pool, songs, ids):
        clean = songs[1][10 * SYNTH_RATE_HZ : 40 * SYNTH_RATE_HZ].astype(np.float64)
        noisy = _drowned(songs[0][20 * SYNTH_RATE_HZ : 60 * SYNTH_RATE_HZ], 47, 18.0)
        noisy *= np.sqrt((clean**2).mean() / (noisy**2).mean())
        whole = np.concatenate([clean, noisy])
        whole = (whole / np.abs(whole).max() * 0.8).astype(np.float32)
        long_file = encode(whole, tmp_path / "long", "mp3")

        async def entries(params: MatchParams) -> list[tuple[int, float, float]]:
            result = await identify_file(
                store, pool, long_file, params, DEFAULT_PARAMS, timeline=True
            )
            assert result.timeline is not None
            return [(e.song.id, e.entry.start_s, e.entry.end_s) for e in result.timeline]

        def drowned_s(found: list[tuple[int, float, float]]) -> float:
            return sum(end - start for song, start, end in found if song == ids[0])

        checked = await entries(MatchParams())
        assert checked[0][0] == ids[1] and checked[0][1] < 1.0 and checked[0][2] > 29.0
        assert {e[0] for e in checked} == {ids[0], ids[1]}
        unchecked = await entries(MatchParams(envelope_check=None))
        assert drowned_s(checked) >= 15.0
        assert drowned_s(checked) >= drowned_s(unchecked) + 5.0


async def test_indexing_known_audio_again_adds_its_missing_envelopes(
    store_url: str, files: dict[str, Path]
) -> None:
    """A song stored before envelopes existed (its row and hashes only) gets them when the
    same audio is indexed again; it stays the same song."""
    store = create_store(Settings(database_url=store_url), DEFAULT_PARAMS.version)
    await store.open()
    try:
        audio = analyse_file(files["song"], DEFAULT_PARAMS)
        old, _ = await store.add_song(
            NewSong(
                meta=SongMeta("Old"),
                duration_s=audio.duration_s,
                n_frames=audio.n_frames,
                content_sha256=audio.content_sha256,
                fingerprints=audio.fingerprints,
            )
        )
        whole = [EnvelopeRange(old.id, 0, audio.n_frames)]
        assert await store.song_envelopes(whole, audio.envelope_format) == {}
        again, created = await index_analysed(store, audio, SongMeta("Again"), "song.mp3")
        assert (again.id, created) == (old.id, False)
        got = await store.song_envelopes(whole, audio.envelope_format)
        np.testing.assert_array_equal(got[old.id].values, audio.envelope)
    finally:
        await store.close()


async def test_a_streams_windows_are_confirmed_from_its_segments_envelopes(
    store_url: str, tmp_path: Path
) -> None:
    """A 48-s stream, four MP3 segments of a song drowned 14 dB under another: its segments'
    envelopes are stored beside their peaks, and the stream's windows find the song in more
    of them than a stream whose segments were stored without envelopes (as a store migrated
    before segments had envelopes holds them): 8 of its windows against 5 on a 2-core
    machine."""
    async with _catalogue(store_url, tmp_path) as (store, _pool, songs, ids):
        noisy = _drowned(songs[0][20 * SYNTH_RATE_HZ : 68 * SYNTH_RATE_HZ], 47, 14.0)
        noisy = (noisy / np.abs(noisy).max() * 0.8).astype(np.float32)
        length = 12 * SYNTH_RATE_HZ
        pieces = [
            analyse_query(
                encode(noisy[i * length : (i + 1) * length], tmp_path / f"seg{i}", "mp3"),
                DEFAULT_PARAMS,
            )
            for i in range(4)
        ]  # fmt: skip

        async def windows_finding_the_song(stream: str, with_envelopes: bool) -> int:
            for i, audio in enumerate(pieces):
                key = f"songs_to_check/streams/{stream}.{i:06d}.ts"
                segment = replace(
                    audio,
                    duration_s=12.0,
                    start_pts_s=None,
                    envelope=audio.envelope if with_envelopes else None,
                    envelope_format=audio.envelope_format if with_envelopes else 0,
                )
                await add_segment(
                    store, SegmentArrival(stream, i, key, datetime.now(UTC)), segment,
                    MatchParams(), params=StreamParams(), fp_params=DEFAULT_PARAMS,
                )  # fmt: skip
            state = await store.get_stream(stream)
            assert state is not None
            stored = await store.stream_segments(state.id, 0.0, 48.0)
            assert len(stored) == 4
            assert {s.envelope_format for s in stored} == ({1} if with_envelopes else {0})
            assert all(len(s.envelope) == (s.n_frames * 24 if with_envelopes else 0)
                       for s in stored)  # fmt: skip
            for segment, audio in zip(stored, pieces, strict=True):
                assert audio.sustained_peaks is not None
                assert segment.sustained_peaks == pack_peaks(audio.sustained_peaks)
            windows = await store.stream_windows(state.id, 0, 10)
            return sum(
                any(h.song_id == ids[0] for h in hits_from_json(w.matches_json)) for w in windows
            )

        checked = await windows_finding_the_song("checked", True)
        unchecked = await windows_finding_the_song("unchecked", False)
        assert checked >= unchecked + 2, (checked, unchecked)

"""Confirming undecided candidates from band envelopes, through each real store: songs
indexed from encoded files, a noisy clip encoded as MP3, the envelopes read back by range."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from service.audio.params import DEFAULT_PARAMS
from service.core.analysis import analyse_file
from service.core.catalogue import index_analysed
from service.core.envelope_confirm import confirm_by_envelope
from service.matching import Match, MatchParams
from service.settings import Settings
from service.store import create_store
from service.store.base import SongMeta
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


async def test_the_envelopes_confirm_the_true_candidate_only(
    store_url: str, files: dict[str, Path]
) -> None:
    store = create_store(Settings(database_url=store_url), DEFAULT_PARAMS.version)
    await store.open()
    try:
        song, _ = await index_analysed(
            store, analyse_file(files["song"]), SongMeta("Song"), "song.mp3"
        )
        other, _ = await index_analysed(
            store, analyse_file(files["other"]), SongMeta("Other"), "other.ogg"
        )
        clip = analyse_file(files["clip"], DEFAULT_PARAMS.for_queries())
        params = MatchParams()

        # The right song at the right offset, ranked behind a wrong song: confirmed.
        candidates = [_candidate(other.id, 12.0), _candidate(song.id, CLIP_START_S)]
        confirmed = await confirm_by_envelope(store, clip, candidates, DEFAULT_PARAMS, params)
        assert confirmed is not None
        assert confirmed.song_id == song.id and confirmed.evidence == "envelope"
        assert confirmed.confidence >= params.min_confidence
        assert confirmed.song_offset_s == CLIP_START_S

        # The right song at a wrong offset, or only wrong songs: nothing.
        for wrong in (
            [_candidate(song.id, CLIP_START_S + 17.0)],
            [_candidate(other.id, CLIP_START_S)],
        ):
            assert await confirm_by_envelope(store, clip, wrong, DEFAULT_PARAMS, params) is None

        # Switched off, or a candidate at another speed: not checked.
        off = replace(params, envelope_check=None)
        assert await confirm_by_envelope(store, clip, candidates, DEFAULT_PARAMS, off) is None
        fast = [replace(_candidate(song.id, CLIP_START_S), speed=1.04, grid_speed=1.04)]
        assert await confirm_by_envelope(store, clip, fast, DEFAULT_PARAMS, params) is None
    finally:
        await store.close()

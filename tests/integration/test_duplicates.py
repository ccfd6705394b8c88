"""Near-duplicates: the same recording in other bytes is the song already stored (a copy
shifted by a fraction of a frame included); a radio edit, an extended mix or another song is a
song of its own. Decided by the fingerprints, on real encoded files, in both stores; and the
API's answer."""

from __future__ import annotations

import json
import subprocess
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import soxr

from service.audio.analysis import analyse_file
from service.core.bulk import BulkIndexer, BulkItem, BulkOptions
from service.core.index import IndexOptions, compare_recordings, index_path, phase_analyser
from service.match.duplicates import DuplicateParams
from service.resources import PoolSpec, open_resources
from service.settings import Settings
from tests.audio_fixtures import SYNTH_RATE_HZ, encode, synth_song
from tests.cli_helpers import run_cli as _cli
from tests.conftest import LiveServer

RATE = SYNTH_RATE_HZ
ROOT = Path(__file__).resolve().parents[2]
MUSIC = ROOT / "tests" / "data" / "music"


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.float32)


@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An original (with 2 s of silence at each end) and what becomes of it."""
    folder = tmp_path_factory.mktemp("variants")
    music = synth_song(501, 40.0)
    original = np.concatenate([_silence(2.0), music, _silence(2.0)])
    cut = int(14 * RATE)
    files = {
        "original": encode(original, folder / "original", "mp3"),
        # The same recording:
        "mp3_192k": _encode_args(original, folder / "mp3_192k.mp3", ["-b:a", "192k"]),
        "flac": encode(original, folder / "copy", "flac"),
        "resampled_44k": encode(
            soxr.resample(original, RATE, 44100).astype(np.float32), folder / "r44", "ogg", 44100
        ),
        "trimmed_silence": encode(music, folder / "trimmed", "aac_m4a"),
        "quieter_6db": encode(original * 0.5, folder / "quiet", "mp3"),
        # Other recordings sharing material:
        "radio_edit": encode(  # 12 s taken out of the middle
            np.concatenate([music[:cut], music[cut + int(12 * RATE) :]]), folder / "edit", "mp3"
        ),
        "extended_mix": encode(  # the middle 16 s played twice
            np.concatenate([music[: int(28 * RATE)], music[int(12 * RATE) :]]),
            folder / "extended",
            "mp3",
        ),
        "other_song": encode(synth_song(502, 40.0), folder / "other", "mp3"),
    }
    return files


def _encode_args(samples: np.ndarray, path: Path, args: list[str]) -> Path:
    raw = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    pcm_in = ["-f", "s16le", "-ar", str(RATE), "-ac", "1", "-i", "pipe:0"]
    codec = ["-c:a", "libmp3lame", *args]
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *pcm_in, *codec, str(path)],
        input=raw,
        check=True,
    )
    return path


SAME = ["mp3_192k", "flac", "resampled_44k", "trimmed_silence", "quieter_6db"]
DIFFERENT = ["radio_edit", "extended_mix", "other_song"]


async def test_the_same_recording_is_one_song_and_edits_are_not(store_url, variants):
    settings = Settings(database_url=store_url, environment="test", cpu_workers=1)
    async with open_resources(settings, pool=PoolSpec(2, use_processes=False)) as resources:
        store, pool, params = resources.store, resources.pool, resources.fp_params
        assert pool is not None
        original = await index_path(
            store, pool, variants["original"], IndexOptions(), params=params
        )
        assert original.created
        for name in SAME:
            found = await index_path(store, pool, variants[name], IndexOptions(), params=params)
            assert not found.created, name
            assert found.song.id == original.song.id, name
            assert found.duplicate is not None and found.duplicate.song_id == original.song.id
            assert min(found.duplicate.new_coverage, found.duplicate.stored_coverage) >= 0.85
        for name in DIFFERENT:
            found = await index_path(store, pool, variants[name], IndexOptions(), params=params)
            assert found.created, name
            assert found.duplicate is None
        # Asked to keep both, a copy is a song of its own.
        kept = await index_path(
            store, pool, variants["flac"], IndexOptions(allow_duplicate=True), params=params
        )
        assert kept.created and kept.song.id != original.song.id


@pytest.fixture(scope="module")
def shifted_copy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A real-music excerpt and its copy with half a 32-ms frame (16 ms) trimmed off the
    start, 4 dB quieter, re-encoded to MP3 at 128 kbit/s."""
    original = MUSIC / "chaos_god.ogg"
    copy = tmp_path_factory.mktemp("shifted") / "chaos_god_shifted.mp3"
    trim = "atrim=start=0.016,asetpts=N/SR/TB,volume=-4dB"
    codec = ["-c:a", "libmp3lame", "-b:a", "128k"]
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(original)]
    subprocess.run([*cmd, "-af", trim, *codec, str(copy)], check=True)
    return original, copy


async def test_a_copy_shifted_by_a_fraction_of_a_frame_is_the_same_recording(
    store_url, shifted_copy
):
    original_path, copy_path = shifted_copy
    params = DuplicateParams()
    settings = Settings(database_url=store_url, environment="test", cpu_workers=1)
    async with open_resources(settings, pool=PoolSpec(2, use_processes=False)) as resources:
        store, pool, fp_params = resources.store, resources.pool, resources.fp_params
        assert pool is not None
        original = await index_path(store, pool, original_path, IndexOptions(), params=fp_params)
        assert original.created
        # On its own frame grid the copy lines up end to end but keeps too few landmarks:
        # the case its other hop phases decide.
        audio = await pool.run(partial(analyse_file, str(copy_path), fp_params))
        own_grid = (await compare_recordings(store, audio, params))[0]
        assert own_grid.song_id == original.song.id and own_grid.is_covered(params)
        assert own_grid.aligned_share < params.min_aligned_share
        phases = phase_analyser(pool, copy_path, fp_params)
        rephased = (await compare_recordings(store, audio, params, phases=phases))[0]
        assert rephased.song_id == original.song.id
        assert rephased.aligned_share >= 2 * params.min_aligned_share

        found = await index_path(store, pool, copy_path, IndexOptions(), params=fp_params)
        assert not found.created and found.song.id == original.song.id
        assert found.duplicate is not None and found.duplicate.aligned_share >= 0.5
        # The bulk import (command line, reindex) decides the same while the file is at hand.
        summary = await BulkIndexer(
            store, pool, BulkOptions(params=fp_params, in_flight=1, resume=False)
        ).run([BulkItem(str(copy_path))])
        assert [(r.status, r.duplicate_of) for r in summary.results] == [
            ("duplicate", original.song.id)
        ]


def test_api_answers_duplicate_of(store_url, variants):
    settings = Settings(database_url=store_url, cpu_workers=1, environment="test")
    with LiveServer(settings) as server, server.client() as client:
        _api_answers_duplicate_of(client, variants)


def _api_answers_duplicate_of(client, variants):
    with variants["original"].open("rb") as f:
        first = client.post("/songs", files={"file": ("original.mp3", f, "audio/mpeg")})
    assert first.status_code in (200, 201), first.text
    with variants["flac"].open("rb") as f:
        copy = client.post("/songs", files={"file": ("copy.flac", f, "audio/flac")})
    assert copy.status_code == 200, copy.text
    body = copy.json()
    assert body["created"] is False
    assert body["duplicate_of"] == body["id"] == first.json()["id"]
    assert body["duplicate_coverage"] >= 0.85
    with variants["flac"].open("rb") as f:
        kept = client.post(
            "/songs?allow_duplicate=true", files={"file": ("copy.flac", f, "audio/flac")}
        )
    assert kept.status_code == 201 and kept.json()["duplicate_of"] is None


def test_dedup_lists_copies_kept_on_purpose(store_url, variants):
    files = [str(variants[n]) for n in ("original", "flac", "radio_edit", "other_song")]
    kept = _cli(store_url, "index", *files, "--allow-duplicate", "--workers", "2")
    assert kept.returncode == 0, kept.stderr
    assert "indexed 4 new song(s)" in kept.stdout
    songs = json.loads(_cli(store_url, "songs", "--json").stdout)["items"]
    ids = {Path(s["source"]).name: s["id"] for s in songs}
    found = _cli(store_url, "dedup", "--format", "json", "--workers", "2")
    assert found.returncode == 0, found.stderr
    pairs = [json.loads(line) for line in found.stdout.splitlines()]
    expected = sorted([ids["original.mp3"], ids["copy.flac"]])
    assert [(p["duplicate_of"], p["song_id"]) for p in pairs] == [tuple(expected)]
    assert pairs[0]["coverage"] >= 0.85

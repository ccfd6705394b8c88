"""The "fp2" index format end to end, on both stores: real recordings indexed through the
service's own code path, 10-s clips changed in speed, tempo or pitch by up to 10 % (rendered
with sox) found with the right song, offset and speed; a clip of an unindexed recording finds
nothing; a catalogue of the other format is refused; a live stream's segments make its log."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.audio.analysis import analyse_file
from service.audio.params import DEFAULT_PARAMS, FingerprintParams, params_for_format
from service.core.identify.identify import identify_file
from service.core.index import IndexOptions, index_path
from service.core.streams.segment import process_stream_segment
from service.errors import IndexMismatch
from service.executor import CpuPool
from service.match import MatchParams
from service.resources import open_resources
from service.settings import Settings
from service.store import SongMeta, create_store
from service.store.rules import unique_fingerprints
from tests.cli_helpers import run_cli
from tests.conftest import LiveServer
from tests.integration.test_streams import PROGRAM, SONG_A, SONG_B, StreamMedia, key_of
from tests.integration.test_streams import stream_media as stream_media

FP2 = params_for_format("fp2")
MUSIC = Path(__file__).resolve().parents[1] / "data" / "music"
INDEXED = ["armygeddon", "chaos_god", "coherence"]
UNINDEXED = "nebula"
CLIP_START_S = 12.0
CLIP_LEN_S = 10.0

#: condition -> (sox effect, the clip's playback speed relative to its song: time scale)
CONDITIONS: dict[str, tuple[list[str], float]] = {
    "clean": ([], 1.0),
    "speed_p8": (["speed", "1.08"], 1.08),
    "speed_m8": (["speed", "0.92"], 0.92),
    "speed_p10": (["speed", "1.10"], 1.10),
    "speed_m10": (["speed", "0.90"], 0.90),
    "tempo_p10": (["tempo", "1.10"], 1.10),
    "tempo_m10": (["tempo", "0.90"], 0.90),
    "pitch_p10": (["pitch", "165"], 1.0),  # +10 % in frequency
    "pitch_m10": (["pitch", "-182"], 1.0),  # -10 %
}


def _render(name: str, effect: list[str], scale: float, out: Path) -> Path:
    """A 10-s clip of the recording from CLIP_START_S (song time), with `effect` applied."""
    subprocess.run(
        ["sox", "-q", str(MUSIC / f"{name}.ogg"), "-c", "1", str(out), "trim",
         str(CLIP_START_S), str(CLIP_LEN_S * scale), *effect],
        check=True,
    )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    folder = tmp_path_factory.mktemp("fp2-clips")
    out = {}
    for name in INDEXED:
        for condition, (effect, scale) in CONDITIONS.items():
            out[(name, condition)] = _render(
                name, effect, scale, folder / f"{name}-{condition}.wav"
            )
    out[(UNINDEXED, "clean")] = _render(UNINDEXED, [], 1.0, folder / "unindexed.wav")
    return out


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def catalogue(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[object, CpuPool, dict[int, str], asyncio.AbstractEventLoop]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('fp2-db')}/fp2.sqlite3"
    else:
        databases = request.getfixturevalue("pg_databases")
        url = databases.url(databases.clone())
    settings = Settings(database_url=url, environment="test", fingerprint_format="fp2")
    loop = asyncio.new_event_loop()
    store = create_store(settings, FP2.version)
    pool = CpuPool(1, use_processes=False)
    loop.run_until_complete(store.open())
    ids = {}
    for name in INDEXED:
        options = IndexOptions(SongMeta(title=name))
        indexed = loop.run_until_complete(
            index_path(store, pool, MUSIC / f"{name}.ogg", options, params=FP2)
        )
        assert indexed.created
        ids[indexed.song.id] = name
    yield store, pool, ids, loop
    loop.run_until_complete(store.close())
    pool.close()
    loop.close()


def _identify(catalogue, path: Path):
    store, pool, ids, loop = catalogue
    result = loop.run_until_complete(identify_file(store, pool, path, MatchParams(), FP2))
    return [(ids.get(m.song.id), m.match) for m in result.matches]


@pytest.mark.parametrize("condition", list(CONDITIONS))
def test_a_changed_clip_is_found_with_its_speed(catalogue, clips, condition: str) -> None:
    _, scale = CONDITIONS[condition]
    for name in INDEXED:
        answers = _identify(catalogue, clips[(name, condition)])
        assert answers, f"{name} {condition}: no match"
        found, match = answers[0]
        assert found == name
        assert match.confidence >= 0.99
        assert match.speed == pytest.approx(scale, abs=0.01)
        assert match.song_offset_s == pytest.approx(CLIP_START_S, abs=0.15)
        # Never a wrong song beside it.
        assert all(other == name for other, _ in answers)


def test_an_unindexed_recording_finds_nothing(catalogue, clips) -> None:
    assert _identify(catalogue, clips[(UNINDEXED, "clean")]) == []


@pytest.mark.parametrize("store_kind", ["sqlite", "postgres"])
def test_a_catalogue_of_the_other_format_is_refused(
    store_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if store_kind == "sqlite":
        url = f"sqlite:///{tmp_path}/fp1.sqlite3"
    else:
        databases = request.getfixturevalue("pg_databases")
        url = databases.url(databases.clone())

    async def run() -> None:
        settings = Settings(database_url=url, environment="test")
        store = create_store(settings, DEFAULT_PARAMS.version)
        await store.open()
        await store.close()
        other = create_store(settings, FP2.version)
        with pytest.raises(IndexMismatch) as raised:
            await other.open()
        await other.close()
        assert DEFAULT_PARAMS.version in raised.value.message

    asyncio.run(run())


def test_the_setting_chooses_the_format_of_a_new_catalogue(tmp_path: Path) -> None:
    async def run() -> None:
        settings = Settings(
            database_url=f"sqlite:///{tmp_path}/new.sqlite3",
            environment="test",
            fingerprint_format="fp2",
        )
        async with open_resources(settings) as resources:
            assert resources.fp_params.version == FP2.version
        # The same catalogue under the default format is refused.
        with pytest.raises(IndexMismatch):
            async with open_resources(
                Settings(database_url=settings.database_url, environment="test")
            ):
                pass

    asyncio.run(run())


def test_a_streams_segments_make_its_log_on_an_fp2_catalogue(
    stream_media: StreamMedia,
    tmp_path: Path,
) -> None:
    """The stream's windows climb the fp2 ladder: both songs of the program are logged at
    their places, and the unknown music between them adds nothing."""

    async def run() -> None:
        url = f"sqlite:///{tmp_path}/stream.sqlite3"
        store = create_store(Settings(database_url=url, environment="test"), FP2.version)
        await store.open()
        pool = CpuPool(1, use_processes=False)
        try:
            ids = {}
            for seed, path in stream_media.songs.items():
                options = IndexOptions(SongMeta(f"Song {seed}"))
                indexed = await index_path(store, pool, path, options, params=FP2)
                ids[indexed.song.id] = seed
            for segment in stream_media.segments[48000]:
                await process_stream_segment(
                    store, pool, "bucket", key_of(segment), segment, MatchParams(), fp_params=FP2
                )
            stream = await store.get_stream("radio1")
            assert stream is not None
            page = await store.list_plays(stream.id, from_s=None, to_s=None, limit=50, offset=0)
            t0 = stream_media.t0[48000]
            plays = [
                (ids[p.song_id], round(p.start_s - t0), round(p.song_start_s)) for p in page.items
            ]
            assert [p[0] for p in plays] == [SONG_A, SONG_B]
            starts = [0.0, PROGRAM[0].length_s + PROGRAM[1].length_s]
            for (_, start, song_start), want, piece in zip(
                plays, starts, (PROGRAM[0], PROGRAM[2]), strict=True
            ):
                assert start == pytest.approx(want, abs=1.0)
                assert song_start == pytest.approx(piece.start_s, abs=1.0)
        finally:
            pool.close()
            await store.close()

    asyncio.run(run())


def _stored_count(path: Path, params: FingerprintParams) -> int:
    """The fingerprints a store keeps of `path` indexed with `params` (each pair once)."""
    return len(unique_fingerprints(analyse_file(path, params).fingerprints)[0])


def test_the_command_line_and_the_api_index_in_the_catalogues_format(tmp_path: Path) -> None:
    """An fp2 catalogue gets fp2 fingerprints whichever adapter indexes: the bulk command's
    and the upload's songs hold as many as the file has under fp2 (landmarks and triplets),
    not the fp1 landmarks alone."""
    url = f"sqlite:///{tmp_path}/adapters.sqlite3"
    by_cli, by_api = MUSIC / "armygeddon.ogg", MUSIC / "coherence.ogg"
    indexed = run_cli(url, "index", str(by_cli), FINGERPRINT_FORMAT="fp2")
    assert indexed.returncode == 0, indexed.stderr
    settings = Settings(
        database_url=url, environment="test", cpu_workers=1, fingerprint_format="fp2"
    )
    with LiveServer(settings) as server, server.client() as client:
        with by_api.open("rb") as f:
            uploaded = client.post("/songs", files={"file": (by_api.name, f, "audio/ogg")})
        assert uploaded.status_code == 201, uploaded.text
        listed = client.get("/songs").json()["items"]
    # Titled from their tags: "Armygeddon", "Coherence".
    counts = {s["title"].lower(): s["fingerprint_count"] for s in listed}
    for path in (by_cli, by_api):
        fp2, fp1 = _stored_count(path, FP2), _stored_count(path, DEFAULT_PARAMS)
        assert fp2 > fp1
        assert counts[path.stem] == fp2, path.name

"""The command line, run as a user runs it: a subprocess against a real database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.audio_fixtures import encode, excerpt, synth_song
from tests.cli_helpers import run_cli as _cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    """A folder tree of songs, as a label's back catalogue arrives."""
    root = tmp_path_factory.mktemp("library")
    (root / "album a").mkdir()
    (root / "album b" / "disc 2").mkdir(parents=True)
    songs = [synth_song(200 + i, 30.0) for i in range(3)]
    encode(songs[0], root / "album a" / "first", "mp3", tags={"title": "First", "artist": "A"})
    encode(songs[1], root / "album b" / "second", "ogg")
    encode(songs[2], root / "album b" / "disc 2" / "third", "flac")
    (root / "album a" / "cover.txt").write_text("not audio, and not picked up by suffix")
    return root, songs


def test_index_identify_and_list(store_url, library, tmp_path):
    root, songs = library
    assert _cli(store_url, "migrate").returncode == 0
    indexed = _cli(store_url, "index", str(root), "--workers", "2")
    assert indexed.returncode == 0, indexed.stderr
    assert "indexed 3 new song(s), 0 already known, 0 failed" in indexed.stdout
    again = _cli(store_url, "index", str(root))
    assert "indexed 0 new song(s), 3 already known, 0 failed" in again.stdout

    listed = json.loads(_cli(store_url, "songs", "--json").stdout)
    assert listed["total"] == 3
    assert {s["title"] for s in listed["items"]} == {"First", "second", "third"}

    clip = encode(excerpt(songs[1], 11.0, 6.0), tmp_path / "clip", "aac_m4a")
    unknown = encode(synth_song(999, 8.0), tmp_path / "unknown", "mp3")
    found = _cli(store_url, "identify", "--json", str(clip), str(unknown))
    assert found.returncode == 0, found.stderr
    first, second = (json.loads(line) for line in found.stdout.splitlines())
    assert first["matches"][0]["song"]["title"] == "second"
    assert first["matches"][0]["song_offset_s"] == pytest.approx(11.0, abs=0.5)
    assert second["matches"] == []

    # `index` compacted when it was done, so there is nothing left to fold in.
    compacted = _cli(store_url, "compact", "--purge")
    assert compacted.returncode == 0, compacted.stderr
    assert "compacted 0 fingerprint(s) into 0 hash(es); purged 0" in compacted.stdout


def test_index_reports_failures_and_exits_non_zero(store_url, tmp_path):
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"\x00" * 1000)
    result = _cli(store_url, "index", str(bad))
    assert result.returncode == 1
    assert "1 failed" in result.stdout
    assert "bad.mp3" in result.stderr


def test_bad_configuration_is_reported(tmp_path):
    result = _cli("mysql://nope", "songs")
    assert result.returncode == 2
    assert "DATABASE_URL" in result.stderr

"""Running a catalogue from the command line: bad input never stops a bulk import nor shows a
traceback, imports take metadata and resume, the store's location is explicit, and the
catalogue goes out (export) and back in (import --keep-ids) unchanged."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from service.cli import build_parser
from tests.audio_fixtures import encode, synth_song
from tests.cli_helpers import run_cli as _cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("catalogue-files")
    (root / "sub").mkdir()
    found = {
        "one": encode(synth_song(401, 25.0), root / "one", "mp3"),
        "two": encode(synth_song(402, 25.0), root / "sub" / "two", "ogg"),
        "three": encode(synth_song(403, 25.0), root / "three", "flac"),
    }
    bad = root / "broken.mp3"
    bad.write_bytes(b"ID3" + b"\x00" * 2000)
    found["broken"] = bad
    return found


def test_every_command_and_option_is_described() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert {"index", "import", "backfill", "info", "delete", "export", "plays"} <= set(sub.choices)
    for name, command in sub.choices.items():
        assert command.description, name
        for action in command._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
    helped = _cli(None, "worker", "--help")
    assert helped.returncode == 0 and "SQS_QUEUE_URL" in helped.stdout
    assert "DATABASE_URL" in _cli(None, "--help").stdout


def test_version() -> None:
    result = _cli(None, "--version")
    assert result.returncode == 0
    assert result.stdout.startswith("song-detection ") and "fingerprint version" in result.stdout


def test_index_goes_past_missing_and_broken_files(store_url: str, files, tmp_path) -> None:
    missing = tmp_path / "missing.mp3"
    result = _cli(
        store_url,
        "index",
        str(missing),
        str(files["one"]),
        str(files["broken"]),
        str(files["two"]),
        "--workers",
        "1",
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "indexed 2 new song(s), 0 already known, 2 failed" in result.stdout
    assert f"failed: {missing}: not_found" in result.stderr
    assert "broken.mp3: not_audio" in result.stderr or "broken.mp3: undecodable" in result.stderr
    listed = json.loads(_cli(store_url, "songs", "--json").stdout)
    assert sorted(s["title"] for s in listed["items"]) == ["one", "two"]
    found = _cli(store_url, "identify", "--json", str(missing), str(files["one"]))
    assert found.returncode == 1 and "Traceback" not in found.stderr
    assert f"error not_found: {missing}: no such file" in found.stderr
    assert json.loads(found.stdout)["matches"][0]["song"]["title"] == "one"
    assert {s["source"] for s in listed["items"]} == {str(files["one"]), str(files["two"])}


def test_errors_are_one_line_with_the_api_code(store_url: str) -> None:
    gone = _cli(store_url, "delete", "424242")
    assert gone.returncode == 1
    assert gone.stderr.strip().splitlines()[-1] == (
        "song-detection: error not_found: no song with id 424242"
    )


def test_unreachable_store_bad_usage_and_configuration(sqlite_url: str) -> None:
    unreachable = "postgresql://postgres@127.0.0.1:1/nothing"
    down = _cli(unreachable, "songs", DB_STALL_TIMEOUT_S="2")
    assert down.returncode == 1
    lines = down.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("song-detection: error store_unavailable:")
    debug = _cli(unreachable, "--debug", "songs", DB_STALL_TIMEOUT_S="2")
    assert "Traceback" in debug.stderr and "store_unavailable" in debug.stderr
    usage = _cli(sqlite_url, "delete", "not-a-number")
    assert usage.returncode == 2
    assert usage.stderr.strip().startswith("song-detection: error validation_error:")
    config = _cli(sqlite_url, "songs", DB_POOL_MIN_SIZE="50", DB_POOL_MAX_SIZE="2")
    assert config.returncode == 2 and "configuration_error" in config.stderr
    assert len(config.stderr.strip().splitlines()) == 1


def test_the_default_store_is_the_same_from_any_directory(files, tmp_path) -> None:
    data_home = tmp_path / "xdg"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    indexed = _cli(None, "index", str(files["one"]), XDG_DATA_HOME=str(data_home))
    assert indexed.returncode == 0, indexed.stderr
    info = _cli(None, "info", "--json", cwd=elsewhere, XDG_DATA_HOME=str(data_home))
    assert info.returncode == 0, info.stderr
    described = json.loads(info.stdout)
    assert described["store"] == "sqlite"
    assert described["location"] == str(data_home / "song-detection" / "song-detection.sqlite3")
    assert described["songs"] == 1 and described["fingerprints"] > 0
    assert described["fingerprint_version"] == described["code_fingerprint_version"]
    text = _cli(None, "info", cwd=elsewhere, XDG_DATA_HOME=str(data_home)).stdout
    assert str(data_home) in text and "songs:               1" in text


def test_import_a_manifest_resume_report_export_and_restore(
    store_url: str, sqlite_url: str, files, tmp_path
) -> None:
    manifest = files["one"].parent / "manifest.csv"
    rows = [
        ["path", "title", "artist", "album", "isrc", "external_id", "notes"],
        ["one.mp3", 'First, "quoted"', "Band", "LP", "USABC2500001", "cat-1", "ignored"],
        ["sub/two.ogg", "Second", "Band", "", "", "cat-2", ""],
        ["nowhere.mp3", "Lost", "", "", "", "", ""],
        ["broken.mp3", "Broken", "", "", "", "", ""],
    ]
    with manifest.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    report = tmp_path / "report.json"
    first = _cli(store_url, "import", str(manifest), "--report", str(report), "--workers", "2")
    assert first.returncode == 1, first.stderr
    assert "Traceback" not in first.stderr
    assert "indexed 2 new song(s), 0 already known, 2 failed" in first.stdout
    results = {Path(r["source"]).name: r for r in json.loads(report.read_text())}
    assert results["one.mp3"]["status"] == "created"
    assert results["nowhere.mp3"]["code"] == "not_found"
    assert results["broken.mp3"]["status"] == "failed"
    assert results["one.mp3"]["origin"] == "manifest.csv:2"
    # The table lists every source with its result.
    assert "created" in first.stdout and "nowhere.mp3" in first.stdout

    again = _cli(store_url, "import", str(manifest), "--report", str(tmp_path / "r.csv"))
    assert "indexed 0 new song(s), 2 already known, 2 failed" in again.stdout
    with (tmp_path / "r.csv").open() as f:
        statuses = {Path(r["source"]).name: r["status"] for r in csv.DictReader(f)}
    assert statuses["one.mp3"] == statuses["two.ogg"] == "skipped"

    exported = _cli(store_url, "export")
    assert exported.returncode == 0, exported.stderr
    songs = {r["title"]: r for r in csv.DictReader(io.StringIO(exported.stdout))}
    first_song = songs['First, "quoted"']
    assert (first_song["artist"], first_song["album"], first_song["isrc"]) == (
        "Band",
        "LP",
        "USABC2500001",
    )
    assert first_song["external_id"] == "cat-1"
    assert first_song["source"] == str(files["one"])
    assert len(first_song["file_sha256"]) == 64

    # The export is a manifest: restoring it elsewhere keeps ids and metadata.
    export_file = tmp_path / "export.csv"
    export_file.write_text(exported.stdout)
    restored = _cli(sqlite_url, "import", str(export_file), "--keep-ids")
    assert restored.returncode == 0, restored.stderr
    back = _cli(sqlite_url, "export")
    restored_rows = list(csv.DictReader(io.StringIO(back.stdout)))
    keep = ("id", "title", "artist", "album", "isrc", "external_id", "source", "content_sha256")
    assert sorted(tuple(r[k] for k in keep) for r in restored_rows) == sorted(
        tuple(r[k] for k in keep) for r in songs.values()
    )


def test_import_a_list_file_and_delete(store_url: str, files, tmp_path) -> None:
    listing = tmp_path / "songs.txt"
    listing.write_text(f"# my songs\n{files['one']}\n\n{files['three']}\n")
    result = _cli(store_url, "import", str(listing), "--no-table")
    assert result.returncode == 0, result.stderr
    assert "indexed 2 new song(s)" in result.stdout
    ids = [s["id"] for s in json.loads(_cli(store_url, "songs", "--json").stdout)["items"]]
    deleted = _cli(store_url, "delete", str(ids[0]))
    assert deleted.returncode == 0 and f"deleted song {ids[0]}" in deleted.stdout
    assert json.loads(_cli(store_url, "songs", "--json").stdout)["total"] == 1


def test_reindex_rebuilds_an_old_catalogue_keeping_ids_and_metadata(
    store_url: str, files, tmp_path
) -> None:
    old = tmp_path / "old.sqlite3"
    old_url = f"sqlite:///{old}"
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "path,title,artist,isrc\n"
        f"{files['one']},One,,USX\n{files['two']},Two,Band,\n{files['three']},Three,,\n"
    )
    assert _cli(old_url, "import", str(manifest)).returncode == 0
    with sqlite3.connect(old) as conn:
        ids = dict(conn.execute("SELECT title, id FROM songs").fetchall())
        # A gap in the ids, a song nobody knows the source of, an older fingerprint version.
        conn.execute("DELETE FROM songs WHERE title = 'Two'")
        conn.execute("UPDATE songs SET source = NULL WHERE title = 'Three'")
        conn.execute("UPDATE index_meta SET value = 'fp0-old' WHERE key = 'fingerprint_version'")
    refused = _cli(old_url, "songs")
    assert refused.returncode == 1 and "index_mismatch" in refused.stderr
    assert "fp0-old" in _cli(old_url, "info").stdout

    rebuilt = _cli(None, "reindex", "--from", old_url, "--to", store_url)
    assert rebuilt.returncode == 1  # the song without a source could not be rebuilt
    assert "no_source" in rebuilt.stdout and "Traceback" not in rebuilt.stderr
    assert "indexed 1 new song(s)" in rebuilt.stdout
    songs = json.loads(_cli(store_url, "songs", "--json").stdout)["items"]
    assert [(s["id"], s["title"], s["artist"], s["isrc"]) for s in songs] == [
        (ids["One"], "One", None, "USX")
    ]
    info = json.loads(_cli(store_url, "info", "--json").stdout)
    assert info["fingerprint_version"] == info["code_fingerprint_version"]
    found = _cli(store_url, "identify", "--json", str(files["one"]))
    assert json.loads(found.stdout)["matches"][0]["song"]["id"] == ids["One"]
    # Again: nothing left to do but the song that has no source; new songs follow the ids.
    again = _cli(None, "reindex", "--from", old_url, "--to", store_url)
    assert "indexed 0 new song(s), 1 already known, 1 failed" in again.stdout
    added = _cli(store_url, "index", str(files["two"]))
    assert added.returncode == 0, added.stderr
    now = [s["id"] for s in json.loads(_cli(store_url, "songs", "--json").stdout)["items"]]
    assert now[-1] > max(ids.values())  # no id the old catalogue gave is handed out again


def test_backfill_an_s3_prefix_with_metadata(sqlite_url: str, files, aws) -> None:
    # Non-ASCII metadata travels in HTTP headers RFC 2047-encoded.
    uno = {"title": "=?utf-8?b?w5pubw==?=", "isrc": "USX1"}
    aws.upload("catalogue/a/one.mp3", files["one"], uno)
    aws.upload("catalogue/two.ogg", files["two"], {"artist": "Band"})
    aws.upload("catalogue/notes.txt", files["broken"])  # not an audio suffix: left alone
    aws.upload("catalogue/broken.mp3", files["broken"])
    aws.upload("elsewhere/three.flac", files["three"])
    env = {
        "AWS_ENDPOINT_URL": aws.endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    uri = f"s3://{aws.bucket}/catalogue/"
    first = _cli(sqlite_url, "backfill", uri, "--workers", "1", **env)
    assert first.returncode == 1, first.stderr  # the broken file
    assert "indexed 2 new song(s), 0 already known, 1 failed" in first.stdout
    assert f"failed: s3://{aws.bucket}/catalogue/broken.mp3: not_audio" in first.stderr
    listed = json.loads(_cli(sqlite_url, "songs", "--json").stdout)["items"]
    songs = {s["source"]: s for s in listed}
    one = songs[f"s3://{aws.bucket}/catalogue/a/one.mp3"]
    assert (one["title"], one["isrc"]) == ("Úno", "USX1")
    assert songs[f"s3://{aws.bucket}/catalogue/two.ogg"]["artist"] == "Band"
    again = _cli(sqlite_url, "backfill", uri, **env)
    assert "indexed 0 new song(s), 2 already known, 1 failed" in again.stdout
    # A manifest may name S3 objects too.
    manifest = files["one"].parent / "s3-manifest.csv"
    manifest.write_text(f"uri,title\ns3://{aws.bucket}/elsewhere/three.flac,Tres\n")
    imported = _cli(sqlite_url, "import", str(manifest), **env)
    assert imported.returncode == 0, imported.stderr
    titles = {s["title"] for s in json.loads(_cli(sqlite_url, "songs", "--json").stdout)["items"]}
    assert titles == {"Úno", "two", "Tres"}


def test_reindex_moves_a_catalogue_to_the_speed_invariant_format(sqlite_url: str, tmp_path) -> None:
    """The documented upgrade path: an fp1 catalogue rebuilt as fp2 keeps its ids and finds
    a clip of real music played 8 % fast, which fp2 searches without the speed grid."""
    music = ROOT / "tests" / "data" / "music"
    old_url = f"sqlite:///{tmp_path / 'fp1.sqlite3'}"
    songs = [music / "armygeddon.ogg", music / "coherence.ogg"]
    assert _cli(old_url, "index", *map(str, songs)).returncode == 0
    listed = json.loads(_cli(old_url, "songs", "--json").stdout)["items"]
    old_ids = {s["title"]: s["id"] for s in listed}

    fp2 = {"FINGERPRINT_FORMAT": "fp2"}
    rebuilt = _cli(None, "reindex", "--from", old_url, "--to", sqlite_url, **fp2)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    info = json.loads(_cli(sqlite_url, "info", "--json", **fp2).stdout)
    assert info["fingerprint_version"].startswith("fp2-")
    assert info["fingerprint_version"] == info["code_fingerprint_version"]
    # Under the default format the catalogue is refused rather than misread.
    refused = _cli(sqlite_url, "songs")
    assert refused.returncode == 1 and "index_mismatch" in refused.stderr
    listed = json.loads(_cli(sqlite_url, "songs", "--json", **fp2).stdout)["items"]
    assert {s["title"]: s["id"] for s in listed} == old_ids

    fast = tmp_path / "fast.wav"
    subprocess.run(
        ["sox", "-q", str(songs[0]), "-c", "1", str(fast), "trim", "12", "10.8", "speed", "1.08"],
        check=True,
    )
    found = _cli(sqlite_url, "identify", "--json", str(fast), **fp2)
    assert found.returncode == 0, found.stderr
    best = json.loads(found.stdout)["matches"][0]
    assert best["song"]["id"] == old_ids[next(t for t in old_ids if "rmygeddon" in t)]
    assert abs(best["speed"] - 1.08) < 0.01

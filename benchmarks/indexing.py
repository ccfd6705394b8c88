"""Speed and scale of indexing and lookups through PostgreSQL.

Four measurements, each into fresh databases named `<--db-prefix>_*` (default
`sd_storage_bench_*`) on the server of `--admin-dsn`, through the service's own code
(decode_audio, peaks_and_envelopes, landmark_hashes, PostgresStore.add_song / compact / lookup, the
`song-detection index` command). With the side-by-side comparison (the default; `--no-before`
skips it), each track is also decoded and fingerprinted by the reference decoder and
fingerprinter (benchmarks/reference_*.py: per-frame decoding, scipy's maximum filter) right
before the current code, and the tracks whose samples, digest and hashes come out identical
are counted. The four:

1. Indexing the corpus's indexed tracks on one core, timed per stage (decode, fingerprint,
   store, compaction), and the PostgreSQL bytes per hour of audio of the same fingerprints in
   the row layout (the delta before compaction: the layout of migrations 0001-0003) and in the
   postings layout (after compaction).
2. Peak RSS of a process indexing a one-hour MP3 (corpus tracks concatenated with ffmpeg).
3. Bulk folder indexing (`song-detection index DIR --workers N`) with 1 and 2 workers.
4. `Store.lookup` latency on synthetic catalogues of `--catalogues` songs of 4 minutes with as
   many fingerprints per second as the corpus's tracks store in measurement 1's catalogue
   (`real_fingerprints_per_s`), whose hashes follow the corpus's empirical distribution (the
   product of its f1, f2-f1 and dt marginals: an unsmoothed histogram of 5 million hashes over
   8.4 million possible values would be mostly noise); queries are 5,000 distinct hashes drawn
   from the same distribution, as a 10-s clip's query hashes are.

`--write` replaces the `indexing` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import itertools
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import numpy as np

from benchmarks.accuracy import corpus_dir
from benchmarks.benchmarks_md import this_command, write_section
from benchmarks.reference_decode import decode_audio_per_frame
from benchmarks.reference_fingerprint import legacy_fingerprinting
from service.audio.analysis import analyse_file
from service.audio.decode import decode_audio
from service.audio.envelopes import DEFAULT_ENVELOPE, band_envelopes, peaks_and_envelopes
from service.audio.hashes import landmark_hashes, unpack_hashes
from service.audio.params import DEFAULT_PARAMS
from service.audio.peaks import find_peaks
from service.audio.spectrogram import frame_count
from service.store import NewSong, SongMeta
from service.store.postgres import PostgresStore
from service.store.postings import encode_postings

ROOT = Path(__file__).resolve().parents[1]
WORK = Path(tempfile.gettempdir()) / "sd_storage_bench"
FINGERPRINT_TABLES = ("fp_postings", "fingerprints", "fp_tombstones")
SYNTHETIC_SONG_S = 240.0


# --- databases --------------------------------------------------------------------------------


def _url(admin_dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(admin_dsn)._replace(path=f"/{name}"))


async def recreate_database(admin_dsn: str, name: str) -> str:
    """Drop `name` if it exists and create it empty; its URL."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return _url(admin_dsn, name)


async def fresh_database(admin_dsn: str, name: str) -> str:
    url = await recreate_database(admin_dsn, name)
    await PostgresStore(url, DEFAULT_PARAMS.version).migrate()
    return url


async def relation_bytes(url: str, tables: tuple[str, ...]) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(
            await conn.fetchval(
                "SELECT sum(pg_total_relation_size(t::regclass)) FROM unnest($1::text[]) t",
                list(tables),
            )
        )
    finally:
        await conn.close()


async def vacuum(url: str, *tables: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"VACUUM (ANALYZE) {', '.join(tables)}")
    finally:
        await conn.close()


async def real_fingerprints_per_s(url: str) -> float:
    """Fingerprints the catalogue's real (non-synthetic) songs store per second of audio."""
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            "SELECT coalesce(sum(fingerprint_count), 0) AS fingerprints,"
            " coalesce(sum(duration_s), 0) AS seconds"
            " FROM songs WHERE content_sha256 NOT LIKE 'synthetic-%'"
        )
    finally:
        await conn.close()
    if not row["seconds"]:
        raise RuntimeError("the catalogue holds no real songs to take the density from")
    return float(row["fingerprints"]) / float(row["seconds"])


def _store(url: str, **kwargs: object) -> PostgresStore:
    return PostgresStore(url, DEFAULT_PARAMS.version, compact_delta_rows=0, **kwargs)  # type: ignore[arg-type]


# --- 1. stage timing and bytes per hour -------------------------------------------------------


@dataclass
class Before:
    decode_s: float = 0.0
    decode_cpu_s: float = 0.0
    fingerprint_s: float = 0.0
    fingerprint_cpu_s: float = 0.0
    mp3_s: float = 0.0
    #: Tracks whose samples, content digest and hashes equal the current code's.
    identical: int = 0


@dataclass
class StageTimes:
    audio_s: float = 0.0
    mp3_audio_s: float = 0.0
    mp3_total_s: float = 0.0
    mp3_decode_fp_s: float = 0.0
    decode_s: float = 0.0
    fingerprint_s: float = 0.0
    store_s: float = 0.0
    compact_s: float = 0.0
    decode_cpu_s: float = 0.0
    fingerprint_cpu_s: float = 0.0
    #: Peaks and band envelopes from one STFT (peaks_and_envelopes, what indexing runs; part
    #: of fingerprint_s), and the same two from two STFTs (find_peaks, then band_envelopes:
    #: the two-pass path, timed right before it on the same track and not stored).
    one_pass_s: float = 0.0
    two_pass_s: float = 0.0
    envelope_bytes: int = 0
    #: The same tracks through the reference code (per-frame decoder, scipy
    #: maximum_filter), measured right next to each "after" run; None when not compared.
    before: Before | None = None
    fingerprints: int = 0
    songs: int = 0
    row_layout_bytes: int = 0
    postings_bytes: int = 0
    songs_bytes: int = 0
    hashes: list[np.ndarray] = field(default_factory=list)


def indexed_tracks(limit: int | None) -> list[Path]:
    root = corpus_dir()
    with (root / "manifest.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["indexed"] == "1"]
    return [root / r["path"] for r in rows[:limit]]


def time_before(path: Path, before: Before) -> tuple[str, np.ndarray, np.ndarray]:
    """Decode and fingerprint `path` with the reference code; (digest, hashes, offsets)."""
    started, started_cpu = time.perf_counter(), time.process_time()
    audio = decode_audio_per_frame(path, DEFAULT_PARAMS.sample_rate_hz)
    decoded, decoded_cpu = time.perf_counter(), time.process_time()
    with legacy_fingerprinting():
        fingerprints = landmark_hashes(find_peaks(audio.samples, DEFAULT_PARAMS), DEFAULT_PARAMS)
    done, done_cpu = time.perf_counter(), time.process_time()
    before.decode_s += decoded - started
    before.decode_cpu_s += decoded_cpu - started_cpu
    before.fingerprint_s += done - decoded
    before.fingerprint_cpu_s += done_cpu - decoded_cpu
    if path.suffix.lower() == ".mp3":
        before.mp3_s += done - started
    return audio.content_sha256, fingerprints.hashes, fingerprints.offsets


async def time_stages(tracks: list[Path], url: str, compare: bool) -> StageTimes:
    """Index `tracks` one after another on this core, timing each stage.

    With `compare`, each track is first decoded and fingerprinted by the reference code,
    so both sides see the same load on a shared machine.
    """
    t = StageTimes(before=Before() if compare else None)
    store = _store(url)
    await store.open()
    try:
        for i, path in enumerate(tracks):
            old = time_before(path, t.before) if t.before is not None else None
            started, started_cpu = time.perf_counter(), time.process_time()
            audio = decode_audio(path, DEFAULT_PARAMS.sample_rate_hz)
            decoded, decoded_cpu = time.perf_counter(), time.process_time()
            t.decode_s += decoded - started
            t.decode_cpu_s += decoded_cpu - started_cpu
            two_peaks = find_peaks(audio.samples, DEFAULT_PARAMS)
            two_envelope = band_envelopes(audio.samples, DEFAULT_PARAMS)
            reference_s = time.perf_counter() - decoded
            t.two_pass_s += reference_s
            # The stages below are timed from here: the reference above is not part of them.
            decoded, decoded_cpu = time.perf_counter(), time.process_time()
            peaks, envelope = peaks_and_envelopes(audio.samples, DEFAULT_PARAMS)
            t.one_pass_s += time.perf_counter() - decoded
            assert np.array_equal(two_peaks.frames, peaks.frames)
            assert np.array_equal(two_envelope, envelope)
            fingerprints = landmark_hashes(peaks, DEFAULT_PARAMS)
            fingerprinted, fingerprinted_cpu = time.perf_counter(), time.process_time()
            t.fingerprint_cpu_s += fingerprinted_cpu - decoded_cpu
            if old is not None and t.before is not None:
                t.before.identical += (
                    old[0] == audio.content_sha256
                    and np.array_equal(old[1], fingerprints.hashes)
                    and np.array_equal(old[2], fingerprints.offsets)
                )
            song, _ = await store.add_song(
                NewSong(
                    meta=SongMeta(title=path.stem),
                    duration_s=audio.duration_s,
                    n_frames=frame_count(len(audio.samples), DEFAULT_PARAMS),
                    content_sha256=audio.content_sha256,
                    fingerprints=fingerprints,
                    envelope=envelope,
                    envelope_format=DEFAULT_ENVELOPE.format,
                )
            )
            stored = time.perf_counter()
            t.fingerprint_s += fingerprinted - decoded
            t.store_s += stored - fingerprinted
            t.audio_s += audio.duration_s
            if path.suffix.lower() == ".mp3":
                t.mp3_audio_s += audio.duration_s
                t.mp3_total_s += stored - started - reference_s
                t.mp3_decode_fp_s += fingerprinted - started - reference_s
            t.fingerprints += song.fingerprint_count
            t.songs += 1
            t.hashes.append(fingerprints.hashes)
            print(f"  [{i + 1}/{len(tracks)}] {path.name}", file=sys.stderr, flush=True)
        await vacuum(url, "fingerprints")
        t.row_layout_bytes = await relation_bytes(url, FINGERPRINT_TABLES)
        started = time.perf_counter()
        await store.compact()
        t.compact_s = time.perf_counter() - started
        # As a bulk index ends: VACUUM, and the emptied delta's indexes rebuilt.
        await store.optimize()
        t.postings_bytes = await relation_bytes(url, FINGERPRINT_TABLES)
        t.songs_bytes = await relation_bytes(url, ("songs",))
        t.envelope_bytes = await relation_bytes(url, ("song_envelopes",))
    finally:
        await store.close()
    return t


# --- 2. one-hour file -------------------------------------------------------------------------


def one_hour_mp3(tracks: list[Path]) -> Path:
    """Corpus tracks concatenated into one 128 kbit/s stereo MP3 of an hour (cached)."""
    out = WORK / "one_hour.mp3"
    if out.exists():
        return out
    WORK.mkdir(parents=True, exist_ok=True)
    chosen: list[Path] = []
    total = 0.0
    for path in tracks:
        chosen.append(path)
        total += decode_audio(path, 8000).duration_s
        if total >= 3600:
            break
    inputs = [arg for p in chosen for arg in ("-i", str(p))]
    prep = ";".join(
        f"[{i}:a]aresample=44100,aformat=sample_fmts=fltp:channel_layouts=stereo[a{i}]"
        for i in range(len(chosen))
    )
    joined = "".join(f"[a{i}]" for i in range(len(chosen)))
    graph = f"{prep};{joined}concat=n={len(chosen)}:v=0:a=1[out]"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", *inputs, "-filter_complex", graph, "-map", "[out]",
         "-t", "3600", "-c:a", "libmp3lame", "-b:a", "128k", str(out)],
        check=True,
    )  # fmt: skip
    return out


def child_index(path: str, url: str) -> None:
    """Runs in its own process: index one file as the service does, report time and peak RSS."""

    async def run() -> dict[str, float]:
        started = time.perf_counter()
        audio = analyse_file(path, DEFAULT_PARAMS)
        analysed = time.perf_counter()
        store = _store(url)
        await store.open()
        try:
            await store.add_song(
                NewSong(
                    meta=SongMeta(title="one hour"),
                    duration_s=audio.duration_s,
                    n_frames=audio.n_frames,
                    content_sha256=audio.content_sha256,
                    fingerprints=audio.fingerprints,
                    envelope=audio.envelope,
                    envelope_format=audio.envelope_format,
                )
            )
        finally:
            await store.close()
        return {
            "audio_s": audio.duration_s,
            "analyse_s": analysed - started,
            "store_s": time.perf_counter() - analysed,
            "fingerprints": len(audio.fingerprints),
        }

    result = asyncio.run(run())
    result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(result))


def measure_one_hour(path: Path, url: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.indexing", "--child-index", str(path), url],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- 3. bulk folder indexing ------------------------------------------------------------------


def bulk_index(tracks: list[Path], url: str, workers: int) -> tuple[float, float]:
    """(wall s, CPU s) `song-detection index DIR --workers N` takes for `tracks` (symlinked).

    The CPU seconds are those of the command and its worker processes (PostgreSQL's own are
    not included): CPU / wall above 1 shows the work spread over more than one core.
    """
    folder = WORK / f"bulk-{os.getpid()}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for i, path in enumerate(tracks):
        (folder / f"{i:04d}{path.suffix}").symlink_to(path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATABASE_")}
    env["DATABASE_URL"] = url
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "service.cli", "index", str(folder), "--workers", str(workers)],
        check=True,
        capture_output=True,
        env=env,
        cwd=ROOT,
    )
    wall_s = time.perf_counter() - started
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (cpu.ru_utime + cpu.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
    return wall_s, cpu_s


# --- 4. synthetic catalogues and lookup latency -----------------------------------------------


def hash_distribution(hashes: np.ndarray) -> np.ndarray:
    """p(hash) over the 23-bit hash space, for synthetic songs with the corpus's statistics.

    The corpus's own hash frequencies, plus the probability Good-Turing gives hashes the
    corpus never produced (the share of its fingerprints whose hash occurs once) spread as
    the product of its (f1, df, dt) marginals: a larger catalogue holds the corpus's frequent
    hashes about as often as the corpus does, and rare ones it never saw. The frequent hashes
    are what a lookup's cost depends on (hits per query grow with the sum of p(hash)^2); the
    marginals alone would spread the postings thinly over values no real hash takes, so
    lookups would meet too few hits.
    """
    h = hashes.astype(np.int64)
    counts = np.bincount(h, minlength=1 << 23).astype(np.float64)
    f1, f2, dt = unpack_hashes(h)
    p_f1 = np.bincount(f1, minlength=512) / len(h)
    p_df = np.bincount(f2 - f1 + 128, minlength=256) / len(h)
    p_dt = np.bincount(dt, minlength=64) / len(h)
    # Index f1 << 14 | (df + 128) << 6 | dt: the layout of pack_hashes.
    marginals = (p_f1[:, None, None] * p_df[None, :, None] * p_dt[None, None, :]).reshape(-1)
    unseen = float(np.count_nonzero(counts == 1)) / len(h)
    p = (1.0 - unseen) * counts / counts.sum() + unseen * marginals / marginals.sum()
    return p / p.sum()


_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_ROW_HEAD = np.dtype([("fields", ">i2"), ("hash_len", ">i4"), ("hash", ">i4"), ("len", ">i4")])


def postings_copy(
    hashes: np.ndarray, counts: np.ndarray, songs: int, rng, first_id: int = 1
) -> bytes:
    """Binary COPY of (hash, postings) rows: `counts[i]` random postings under `hashes[i]`,
    spread over song ids `first_id .. first_id + songs - 1`."""
    n = int(counts.sum())
    body = encode_postings(
        rng.integers(first_id, first_id + songs, n),
        rng.integers(0, int(SYNTHETIC_SONG_S / DEFAULT_PARAMS.frame_s), n),
    )
    return rows_copy(hashes, counts, body)


def rows_copy(hashes: np.ndarray, counts: np.ndarray, packed: bytes) -> bytes:
    """Binary COPY of (hash, postings) rows: `packed` holds `counts[i]` postings per hash."""
    keep = counts > 0
    hashes, counts = hashes[keep], counts[keep]
    body = np.frombuffer(packed, dtype=np.uint8)
    lengths = counts * 6
    sizes = _ROW_HEAD.itemsize + lengths
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    out = np.empty(int(sizes.sum()), dtype=np.uint8)
    heads = np.empty(len(hashes), dtype=_ROW_HEAD)
    heads["fields"], heads["hash_len"], heads["hash"], heads["len"] = 2, 4, hashes, lengths
    out[starts[:, None] + np.arange(_ROW_HEAD.itemsize)] = heads.view(np.uint8).reshape(
        len(hashes), -1
    )
    body_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    out[np.repeat(starts + _ROW_HEAD.itemsize - body_starts, lengths) + np.arange(len(body))] = body
    return _COPY_HEADER + out.tobytes() + b"\xff\xff"


async def load_synthetic(
    url: str, songs: int, p: np.ndarray, seed: int, fps_per_s: float
) -> tuple[int, float]:
    """Fill fp_postings and songs as `songs` indexed 4-minute songs of `fps_per_s`
    fingerprints per second would; (postings, s)."""
    rng = np.random.default_rng(seed)
    per_song = round(SYNTHETIC_SONG_S * fps_per_s)
    counts = rng.poisson(p * songs * per_song)
    started = time.perf_counter()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "INSERT INTO songs (title, duration_s, n_frames, content_sha256, fingerprint_count)"
            " SELECT 'synthetic ' || i, $2, $3, 'synthetic-' || i, $4"
            " FROM generate_series(1, $1::int) i",
            songs,
            SYNTHETIC_SONG_S,
            int(SYNTHETIC_SONG_S / DEFAULT_PARAMS.frame_s),
            per_song,
        )
        bounds = np.searchsorted(np.cumsum(counts), np.arange(4_000_000, counts.sum(), 4_000_000))
        edges = [0, *bounds.tolist(), len(counts)]
        for lo, hi in itertools.pairwise(edges):
            if hi <= lo:
                continue
            payload = postings_copy(np.arange(lo, hi), counts[lo:hi], songs, rng)
            await conn.copy_to_table(
                "fp_postings", source=memoryview(payload), columns=["hash", "postings"],
                format="binary",
            )  # fmt: skip
    finally:
        await conn.close()
    await vacuum(url, "fp_postings", "songs")
    return int(counts.sum()), time.perf_counter() - started


async def lookup_latency(url: str, p: np.ndarray, queries: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    store = _store(url, pool_min_size=1, pool_max_size=1)
    await store.open()
    try:
        probes = []
        for _ in range(queries + 3):
            drawn = np.unique(rng.choice(len(p), 9000, p=p))
            probes.append(rng.permutation(drawn)[:5000].astype(np.int32))
        for probe in probes[:3]:  # warm: connection, prepared statement, song lengths
            await store.lookup(probe)
        elapsed, hits = [], []
        for probe in probes[3:]:
            started = time.perf_counter()
            found = await store.lookup(probe)
            elapsed.append((time.perf_counter() - started) * 1000)
            hits.append(len(found))
    finally:
        await store.close()
    return {
        "p50_ms": float(np.percentile(elapsed, 50)),
        "p95_ms": float(np.percentile(elapsed, 95)),
        "hits": float(np.mean(hits)),
    }


# --- report -----------------------------------------------------------------------------------


def _mb_per_h(size: int, audio_s: float) -> float:
    return size / 1e6 / (audio_s / 3600)


def _stage_table_after_only(t: StageTimes) -> list[str]:
    total = t.decode_s + t.fingerprint_s + t.store_s
    lines = ["| stage | seconds | x real time |", "|---|---|---|"]
    for name, s in (
        ("decode (PyAV + soxr to 8 kHz mono)", t.decode_s),
        ("fingerprint (one STFT: peaks and 24-band envelopes; hashes)", t.fingerprint_s),
        ("store (`add_song`: one COPY into the delta, envelopes)", t.store_s),
        ("**decode + fingerprint + store**", total),
        ("compaction of the whole delta (`compact`, once)", t.compact_s),
        ("all of the above", total + t.compact_s),
    ):
        lines.append(f"| {name} | {s:.1f} | {t.audio_s / s:.0f} |")
    if t.mp3_audio_s:
        lines.append(
            f"| MP3 tracks only, decode + fingerprint + store | {t.mp3_total_s:.1f} | "
            f"{t.mp3_audio_s / t.mp3_total_s:.0f} |"
        )
    return lines


def _stage_table(t: StageTimes) -> list[str]:
    """Before and after, side by side; CPU rows are this process's CPU time (the same work
    without the waits a shared machine adds), wall rows what a user would wait."""
    b = t.before
    assert b is not None
    after_total = t.decode_s + t.fingerprint_s + t.store_s
    before_total = b.decode_s + b.fingerprint_s + t.store_s
    rows = [
        ("decode, wall", b.decode_s, t.decode_s),
        ("decode, CPU", b.decode_cpu_s, t.decode_cpu_s),
        ("fingerprint (STFT, peaks, hashes), wall", b.fingerprint_s, t.fingerprint_s),
        ("fingerprint, CPU", b.fingerprint_cpu_s, t.fingerprint_cpu_s),
        ("store (`add_song`: one COPY into the delta), wall *", t.store_s, t.store_s),
        ("**decode + fingerprint + store**, wall", before_total, after_total),
        (
            "decode + fingerprint CPU + store wall",
            b.decode_cpu_s + b.fingerprint_cpu_s + t.store_s,
            t.decode_cpu_s + t.fingerprint_cpu_s + t.store_s,
        ),
    ]
    lines = [
        "| stage | before s | before x real time | after s | after x real time | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for name, old, new in rows:
        lines.append(
            f"| {name} | {old:.1f} | {t.audio_s / old:.0f} | {new:.1f} | {t.audio_s / new:.0f} "
            f"| {old / new:.2f}x |"
        )
    if t.mp3_audio_s:
        old = b.mp3_s + t.mp3_total_s - t.mp3_decode_fp_s
        lines.append(
            f"| MP3 tracks only, decode + fingerprint + store, wall | {old:.1f} | "
            f"{t.mp3_audio_s / old:.0f} | {t.mp3_total_s:.1f} | "
            f"{t.mp3_audio_s / t.mp3_total_s:.0f} | {old / t.mp3_total_s:.2f}x |"
        )
    lines += [
        f"| compaction of the whole delta (`compact`, once) | | | {t.compact_s:.1f} | "
        f"{t.audio_s / t.compact_s:.0f} | |",
        "",
        f"\\* The store code did not change; its one measurement counts on both sides. Samples, "
        f"content digests and hashes identical before and after: {b.identical} of {t.songs} "
        "tracks.",
    ]
    return lines


def report(
    t: StageTimes, hour: dict[str, float] | None, bulk: dict[int, tuple[float, float, float]],
    scale: list[dict[str, float]],
) -> list[str]:  # fmt: skip
    h = t.audio_s / 3600
    fps = t.fingerprints / t.audio_s
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f} when the report was written, PostgreSQL on the same host; "
        f"Python {platform.python_version()}. Measured "
        f"{time.strftime('%Y-%m-%d')}.",
        "",
        f"**Indexing on one core** ({t.songs} corpus tracks, {h:.2f} h of audio, "
        f"{t.fingerprints:,} fingerprints = {fps:.0f} per second of audio):",
        "",
    ]
    lines += _stage_table(t) if t.before is not None else _stage_table_after_only(t)
    lines += [
        "",
        f"Peaks and band envelopes, side by side on every track: one STFT "
        f"(`peaks_and_envelopes`, in the fingerprint stage) {t.one_pass_s:.1f} s, two STFTs "
        f"(`find_peaks`, then `band_envelopes`) {t.two_pass_s:.1f} s, "
        f"{t.one_pass_s / t.two_pass_s:.2f}x the time; identical peaks and envelopes.",
    ]
    lines += [
        "",
        "**PostgreSQL bytes per hour of audio** (the same fingerprints, measured side by side: "
        "`pg_total_relation_size` of the fingerprint tables after `VACUUM`):",
        "",
        "| layout | MB | MB per hour | bytes per fingerprint |",
        "|---|---|---|---|",
        f"| row per fingerprint (0001; now the delta) | {t.row_layout_bytes / 1e6:.1f} | "
        f"{_mb_per_h(t.row_layout_bytes, t.audio_s):.1f} | "
        f"{t.row_layout_bytes / t.fingerprints:.1f} |",
        f"| postings (0004, after compaction and `optimize()`) | {t.postings_bytes / 1e6:.1f} | "
        f"{_mb_per_h(t.postings_bytes, t.audio_s):.1f} | {t.postings_bytes / t.fingerprints:.1f} |",
        f"| `songs` table (either layout) | {t.songs_bytes / 1e6:.2f} | "
        f"{_mb_per_h(t.songs_bytes, t.audio_s):.2f} | |",
        f"| `song_envelopes` (either layout) | {t.envelope_bytes / 1e6:.2f} | "
        f"{_mb_per_h(t.envelope_bytes, t.audio_s):.2f} | |",
        f"| ratio row / postings | {t.row_layout_bytes / t.postings_bytes:.1f}x | | |",
    ]
    for row in scale:
        lines.append(
            f"| postings, synthetic {row['songs']:,.0f} songs ({row['hours']:.0f} h) | "
            f"{row['bytes'] / 1e6:,.0f} | {row['bytes'] / 1e6 / row['hours']:.1f} | "
            f"{row['bytes'] / row['postings']:.1f} |"
        )
    if hour:
        lines += [
            "",
            f"**One-hour MP3** (128 kbit/s stereo, {hour['audio_s'] / 60:.0f} min, "
            f"{hour['fingerprints']:,.0f} fingerprints) indexed by one process: peak RSS "
            f"{hour['peak_rss_bytes'] / 2**20:.0f} MiB; decode + fingerprint "
            f"{hour['analyse_s']:.1f} s, store {hour['store_s']:.1f} s "
            f"({hour['audio_s'] / (hour['analyse_s'] + hour['store_s']):.0f}x real time).",
        ]
    if bulk:
        lines += [
            "",
            "**Bulk folder indexing** (`song-detection index DIR --workers N`, including its "
            "final `optimize()`):",
            "",
            "| workers | audio | seconds | x real time | speed-up | CPU s (command + workers) "
            "| CPU / wall |",
            "|---|---|---|---|---|---|---|",
        ]
        base = bulk[min(bulk)][1]
        for workers, (audio_s, seconds, cpu_s) in sorted(bulk.items()):
            lines.append(
                f"| {workers} | {audio_s / 3600:.2f} h | {seconds:.1f} | "
                f"{audio_s / seconds:.0f} | {base / seconds:.2f}x | {cpu_s:.1f} | "
                f"{cpu_s / seconds:.2f} |"
            )
    if scale:
        lines += [
            "",
            f"**`Store.lookup` latency** on synthetic catalogues (4-min songs, "
            f"{scale[0]['fps_per_s']:.0f} fingerprints/s as the corpus's tracks store, hashes "
            "drawn from the corpus's distribution), 5,000 distinct "
            "query hashes per lookup, one connection, warm:",
            "",
            "| songs | postings | load s | lookup p50 ms | p95 ms | hits per lookup |",
            "|---|---|---|---|---|---|",
        ]
        for row in scale:
            lines.append(
                f"| {row['songs']:,.0f} | {row['postings']:,.0f} | {row['load_s']:.0f} | "
                f"{row['p50_ms']:.1f} | {row['p95_ms']:.1f} | {row['hits']:,.0f} |"
            )
    return lines


async def run(args: argparse.Namespace) -> list[str]:
    tracks = indexed_tracks(args.tracks)
    print(f"1. stage timing on {len(tracks)} tracks", file=sys.stderr)
    url = await fresh_database(args.admin_dsn, f"{args.db_prefix}_stages")
    stages = await time_stages(tracks, url, compare=not args.no_before)
    hour = None
    if not args.skip_hour:
        print("2. one-hour file", file=sys.stderr)
        path = one_hour_mp3(indexed_tracks(None))
        hour = measure_one_hour(
            path, await fresh_database(args.admin_dsn, f"{args.db_prefix}_hour")
        )
    bulk: dict[int, tuple[float, float, float]] = {}
    bulk_tracks = tracks[: args.bulk_tracks]
    bulk_audio_s = sum(decode_audio(p, 8000).duration_s for p in bulk_tracks) if bulk_tracks else 0
    for workers in (1, 2) if bulk_tracks else ():
        print(f"3. bulk index, {workers} worker(s)", file=sys.stderr)
        db = await fresh_database(args.admin_dsn, f"{args.db_prefix}_bulk{workers}")
        bulk[workers] = (bulk_audio_s, *bulk_index(bulk_tracks, db, workers))
    p = hash_distribution(np.concatenate(stages.hashes))
    fps_per_s = await real_fingerprints_per_s(url)
    scale = []
    for songs in args.catalogues:
        print(f"4. synthetic catalogue of {songs} songs", file=sys.stderr)
        db = await fresh_database(args.admin_dsn, f"{args.db_prefix}_syn{songs}")
        postings, load_s = await load_synthetic(db, songs, p, seed=songs, fps_per_s=fps_per_s)
        row = {
            "songs": songs,
            "hours": songs * SYNTHETIC_SONG_S / 3600,
            "postings": postings,
            "load_s": load_s,
            "fps_per_s": fps_per_s,
            "bytes": await relation_bytes(db, FINGERPRINT_TABLES),
        }
        row.update(await lookup_latency(db, p, args.lookups, seed=songs + 1))
        scale.append(row)
        print(f"   {row}", file=sys.stderr)
    return report(stages, hour, bulk, scale)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--tracks", type=int, default=None, help="corpus tracks (default: all)")
    parser.add_argument("--bulk-tracks", type=int, default=20)
    parser.add_argument("--catalogues", type=lambda s: [int(x) for x in s.split(",") if x],
                        default=[1000, 10000])  # fmt: skip
    parser.add_argument("--lookups", type=int, default=40)
    parser.add_argument("--skip-hour", action="store_true")
    parser.add_argument(
        "--db-prefix", default="sd_storage_bench", help="names of the databases it (re)creates"
    )
    parser.add_argument(
        "--no-before", action="store_true", help="skip the side-by-side run of the reference code"
    )
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    parser.add_argument("--child-index", nargs=2, metavar=("FILE", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_index:
        child_index(*args.child_index)
        return 0
    lines = asyncio.run(run(args))
    print("\n".join(lines))
    if args.write:
        write_section("indexing", "## Speed and scale", this_command("benchmarks.indexing"), lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

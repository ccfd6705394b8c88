"""Does hash-partitioning the postings pay on one PostgreSQL node?

Databases on the same server, in one run, with identical contents: `fp_postings` as the
migrations create it (one table, primary key on hash), and `fp_postings` as `PARTITION BY HASH
(hash)` into each of `--partitions` counts of tables (each with its primary key, `STORAGE
EXTERNAL` as the original). Nothing else differs: the delta, the songs and the service's own
statements (`PostgresStore.lookup`, `compact`) are the same.

- Catalogue: `--songs` synthetic 4-minute songs with the corpus's statistics (the fingerprints
  per second and hash distribution of `--tracks` real corpus tracks, fingerprinted here; see
  benchmarks/indexing.py, `hash_distribution`), loaded by binary COPY into each layout: the
  first ingest time.
- Compaction: `--delta-songs` more synthetic songs COPYed into the delta, then `compact()`
  folds them into the postings (`INSERT ... ON CONFLICT (hash) DO UPDATE`): the ingest path of
  the running service, the second ingest time.
- Lookups: `--queries` probes of 5,000 distinct hashes drawn from the same distribution (a
  10-s clip's query hashes), each timed on both layouts, alternating which goes first, after
  a warm-up that reads every probe once (so both are served from memory).

`--write` replaces the `partitioning` table of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import numpy as np

from benchmarks.benchmarks_md import this_command, write_section
from benchmarks.indexing import (
    SYNTHETIC_SONG_S,
    fresh_database,
    hash_distribution,
    indexed_tracks,
    load_synthetic,
    relation_bytes,
    vacuum,
)
from service.audio.analysis import analyse_file
from service.audio.params import DEFAULT_PARAMS
from service.store.postgres import PostgresStore, encode_fingerprint_copy

HEADING = "## Hash-partitioned postings on one node (`benchmarks/partitioning.py`)"
CACHE = Path("/tmp/sd_partition_bench")
PROBE_HASHES = 5000


def _track_hashes(path: str) -> tuple[np.ndarray, float]:
    audio = analyse_file(path, DEFAULT_PARAMS, envelope=None)
    return audio.fingerprints.hashes, audio.duration_s


def corpus_statistics(tracks: int, workers: int) -> tuple[np.ndarray, float]:
    """p(hash) and fingerprints per second of audio of `tracks` corpus tracks (cached)."""
    cache = CACHE / f"stats-{DEFAULT_PARAMS.version}-{tracks}.npz"
    if cache.exists():
        data = np.load(cache)
        return data["p"], float(data["fps"])
    paths = [str(p) for p in indexed_tracks(tracks)]
    with ProcessPoolExecutor(workers) as pool:
        results = list(pool.map(_track_hashes, paths))
    hashes = np.concatenate([h for h, _ in results])
    fps = len(hashes) / sum(s for _, s in results)
    p = hash_distribution(hashes)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(cache, p=p, fps=fps)
    return p, fps


def partition_sql(partitions: int) -> str:
    """Replace the empty fp_postings of a migrated database by a hash-partitioned one."""
    parts = "\n".join(
        f"CREATE TABLE fp_postings_p{i} PARTITION OF fp_postings"
        f" FOR VALUES WITH (MODULUS {partitions}, REMAINDER {i});"
        f" ALTER TABLE fp_postings_p{i} ALTER COLUMN postings SET STORAGE EXTERNAL;"
        for i in range(partitions)
    )
    return f"""
DROP TABLE fp_postings;
CREATE TABLE fp_postings (
    hash     integer PRIMARY KEY,
    postings bytea NOT NULL
) PARTITION BY HASH (hash);
ALTER TABLE fp_postings ALTER COLUMN postings SET STORAGE EXTERNAL;
{parts}
"""


async def _execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _postings_bytes(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(
            await conn.fetchval(
                "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c"
                " WHERE c.relname = 'fp_postings' OR c.relname LIKE 'fp_postings\\_p%'"
            )
        )
    finally:
        await conn.close()


async def fill_delta(url: str, first_id: int, songs: int, p: np.ndarray, fps: float, seed: int):
    """COPY `songs` synthetic songs (ids from `first_id`) into the delta, with their rows."""
    rng = np.random.default_rng(seed)
    per_song = round(SYNTHETIC_SONG_S * fps)
    frames = int(SYNTHETIC_SONG_S / DEFAULT_PARAMS.frame_s)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "INSERT INTO songs (id, title, duration_s, n_frames, content_sha256,"
            " fingerprint_count) OVERRIDING SYSTEM VALUE"
            " SELECT i, 'delta ' || i, $3, $4, 'synthetic-delta-' || i, $5"
            " FROM generate_series($1::int, $1::int + $2::int - 1) i",
            first_id,
            songs,
            SYNTHETIC_SONG_S,
            frames,
            per_song,
        )
        for song_id in range(first_id, first_id + songs):
            hashes = np.unique(rng.choice(len(p), per_song, p=p)).astype(np.int32)
            payload = encode_fingerprint_copy(
                song_id, hashes, rng.integers(0, frames, len(hashes)).astype(np.int32)
            )
            await conn.copy_to_table(
                "fingerprints", source=memoryview(payload), columns=["hash", "song_id", "frame"],
                format="binary",
            )  # fmt: skip
    finally:
        await conn.close()
    await vacuum(url, "fingerprints")


def _store(url: str) -> PostgresStore:
    return PostgresStore(
        url, DEFAULT_PARAMS.version, compact_delta_rows=0, pool_min_size=1, pool_max_size=1
    )


async def lookups(urls: list[str], p: np.ndarray, queries: int, seed: int) -> list[list[float]]:
    """Milliseconds per probe on each database, the order alternating probe by probe."""
    rng = np.random.default_rng(seed)
    probes = []
    for _ in range(queries):
        drawn = np.unique(rng.choice(len(p), 2 * PROBE_HASHES, p=p))
        probes.append(rng.permutation(drawn)[:PROBE_HASHES].astype(np.int32))
    stores = [_store(url) for url in urls]
    for store in stores:
        await store.open()
    elapsed: list[list[float]] = [[] for _ in urls]
    hits: list[list[int]] = [[] for _ in urls]
    try:
        for probe in probes:  # warm-up: every page a probe reads, in memory for both
            for store in stores:
                await store.lookup(probe)
        for i, probe in enumerate(probes):
            order = range(len(stores)) if i % 2 == 0 else reversed(range(len(stores)))
            for k in order:
                started = time.perf_counter()
                found = await stores[k].lookup(probe)
                elapsed[k].append((time.perf_counter() - started) * 1000)
                hits[k].append(len(found))
    finally:
        for store in stores:
            await store.close()
    if any(h != hits[0] for h in hits):
        raise AssertionError("the layouts returned different hits")
    return [*elapsed, [float(np.mean(hits[0]))]]


async def run(args: argparse.Namespace) -> dict:
    p, fps = corpus_statistics(args.tracks, args.workers)
    counts = [int(n) for n in args.partitions.split(",")]
    layouts = ["one table", *(f"{n} hash partitions" for n in counts)]
    urls = [await fresh_database(args.admin_dsn, f"{args.db_prefix}_plain")]
    for n in counts:
        urls.append(await fresh_database(args.admin_dsn, f"{args.db_prefix}_hash{n}"))
        await _execute(urls[-1], partition_sql(n))
    result: dict = {"layouts": layouts, "fps": fps, "load": [], "compact": [], "bytes": []}
    for url in urls:
        postings, seconds = await load_synthetic(url, args.songs, p, args.seed, fps)
        result["postings"] = postings
        result["load"].append(seconds)
    for url in urls:
        await fill_delta(url, args.songs + 1, args.delta_songs, p, fps, args.seed + 1)
        store = _store(url)
        await store.open()
        try:
            started = time.perf_counter()
            compacted = await store.compact()
            result["compact"].append(time.perf_counter() - started)
        finally:
            await store.close()
        result["delta_rows"] = compacted.fingerprints
        await vacuum(url, "fp_postings", "fingerprints")
        result["bytes"].append(await _postings_bytes(url))
        result.setdefault("total_bytes", []).append(
            await relation_bytes(url, ("fp_postings", "fingerprints", "fp_tombstones"))
        )
    *elapsed, hits = await lookups(urls, p, args.queries, args.seed + 2)
    result["elapsed"], result["hits"] = elapsed, hits[0]
    if not args.keep:
        conn = await asyncpg.connect(args.admin_dsn)
        try:
            for url in urls:
                name = url.rsplit("/", 1)[1]
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
    return result


def report(r: dict, args: argparse.Namespace) -> list[str]:
    def row(label: str, values: list[float], unit: str) -> str:
        cells = [unit.format(v) for v in values]
        ratios = [f"{v / values[0]:.2f}x" for v in values[1:]]
        return f"| {label} | " + " | ".join(cells + ratios) + " |"

    rows = [
        row("bulk COPY of the catalogue, s", r["load"], "{:.1f}"),
        row(f"compaction of {r['delta_rows']:,} delta rows, s", r["compact"], "{:.2f}"),
        row("lookup p50, ms", [float(np.percentile(e, 50)) for e in r["elapsed"]], "{:.1f}"),
        row("lookup p95, ms", [float(np.percentile(e, 95)) for e in r["elapsed"]], "{:.1f}"),
        row("lookup mean, ms", [float(np.mean(e)) for e in r["elapsed"]], "{:.1f}"),
        row("`fp_postings` size, MB", [b / 1e6 for b in r["bytes"]], "{:.0f}"),
    ]
    plain, *parted = r["layouts"]
    hours = (args.songs + args.delta_songs) * SYNTHETIC_SONG_S / 3600
    return [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, PostgreSQL on the same host "
        f"(shared with other jobs; load average {os.getloadavg()[0]:.1f} at the end); Python "
        f"{platform.python_version()}. Measured {datetime.now(UTC).strftime('%Y-%m-%d %H:%M')}"
        " UTC.",
        "",
        f"Catalogue: {args.songs:,} + {args.delta_songs:,} synthetic 4-minute songs "
        f"({hours:,.0f} h of audio, {r['postings']:,} postings loaded plus "
        f"{r['delta_rows']:,} compacted; {r['fps']:.0f} fingerprints per second, the hash "
        f"distribution of {args.tracks} corpus tracks). Lookups: {args.queries} probes of "
        f"{PROBE_HASHES:,} distinct hashes, {r['hits']:,.0f} hits each on average, the same "
        "hits from every layout, each probe timed on every layout in turn.",
        "",
        f"| | {plain} | "
        + " | ".join(parted)
        + " | "
        + " | ".join(f"{p.split()[0]} partitions / one table" for p in parted)
        + " |",
        "|---|" + "---|" * (2 * len(parted) + 1),
        *rows,
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--db-prefix", default="sd_partition_bench")
    parser.add_argument("--songs", type=int, default=1000)
    parser.add_argument("--delta-songs", type=int, default=34, help="about a million rows")
    parser.add_argument(
        "--partitions", default="8,16", help="partition counts to compare, comma-separated"
    )
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--tracks", type=int, default=40, help="corpus tracks for statistics")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the two databases")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    lines = report(result, args)
    print("\n".join(lines))
    if args.write:
        write_section("partitioning", HEADING, this_command("benchmarks.partitioning"), lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

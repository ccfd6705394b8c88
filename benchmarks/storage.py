"""PostgreSQL bytes per hour of audio after a bulk index, relation by relation.

The corpus's indexed tracks (or `--tracks-dir`, e.g. the repository's test music) are indexed
the way `song-detection index` indexes a folder: analysed by `analyse_file` in `--workers`
processes, stored one song at a time by `index_analysed` through a PostgresStore with the
service's `COMPACT_DELTA_ROWS` (so background compactions run during the load as they do in
production). Then, side by side on the same database:

1. after the load (background compactions only);
2. `compact(purge=True)` and `VACUUM (ANALYZE)` of the index tables: what `optimize()` did
   before it rebuilt the delta's indexes;
3. `optimize()` as it is (the same, then `REINDEX TABLE CONCURRENTLY fingerprints`).

Each step's `pg_relation_size` of every relation of the index (heap, TOAST, indexes), the songs
and envelopes, and the whole database. `--write` replaces the `storage` table of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from benchmarks.accuracy import corpus_dir
from benchmarks.benchmarks_md import this_command, write_section
from benchmarks.indexing import recreate_database
from service.audio.analysis import AnalysedAudio, analyse_file
from service.audio.params import DEFAULT_PARAMS
from service.core.index import index_analysed
from service.settings import Settings
from service.store.postgres import PostgresStore

HEADING = "## Storage per hour of audio (`benchmarks/storage.py`)"
AUDIO_SUFFIXES = {".mp3", ".ogg", ".flac", ".wav", ".m4a", ".aac", ".opus"}

#: Every relation of the fingerprint index, and the others a catalogue holds, in report order.
RELATIONS_SQL = """
SELECT t.relname AS tab, c.relname AS name,
       CASE WHEN c.oid = t.oid THEN 'heap' WHEN c.relkind = 't' THEN 'TOAST'
            WHEN x.indrelid = t.reltoastrelid THEN 'TOAST index' ELSE 'index' END AS kind,
       pg_relation_size(c.oid) AS bytes,
       CASE WHEN c.oid = t.oid THEN 0 WHEN c.relkind = 't' THEN 2
            WHEN x.indrelid = t.reltoastrelid THEN 3 ELSE 1 END AS rank
FROM pg_class t
JOIN LATERAL (
    SELECT t.oid AS oid, NULL::oid AS indrelid
    UNION ALL SELECT t.reltoastrelid, NULL WHERE t.reltoastrelid <> 0
    UNION ALL SELECT indexrelid, indrelid FROM pg_index WHERE indrelid IN (t.oid, t.reltoastrelid)
) x ON true
JOIN pg_class c ON c.oid = x.oid
WHERE t.relname = ANY($1::text[]) AND t.relkind = 'r'
  AND t.relnamespace = 'public'::regnamespace
ORDER BY array_position($1::text[], t.relname::text), rank, c.relname
"""
INDEX_TABLES = ["fp_postings", "fingerprints", "fp_tombstones"]
OTHER_TABLES = ["songs", "song_envelopes"]


def tracks(folder: Path | None, limit: int | None) -> list[Path]:
    if folder is not None:
        found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        return found[:limit]
    root = corpus_dir()
    with (root / "manifest.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["indexed"] == "1"]
    return [root / r["path"] for r in rows[:limit]]


async def sizes(url: str) -> dict[str, object]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(RELATIONS_SQL, INDEX_TABLES + OTHER_TABLES)
        database = await conn.fetchval("SELECT pg_database_size(current_database())")
        delta_rows = await conn.fetchval("SELECT count(*) FROM fingerprints")
    finally:
        await conn.close()
    return {
        "relations": [(r["tab"], r["name"], r["kind"], int(r["bytes"])) for r in rows],
        "database": int(database),
        "delta_rows": int(delta_rows),
    }


async def old_optimize(store: PostgresStore, url: str) -> None:
    """optimize() without the rebuild of the delta's indexes."""
    await store.compact(purge=True)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("VACUUM (ANALYZE) fingerprints, fp_postings, fp_tombstones")
        await conn.execute("ANALYZE songs")
    finally:
        await conn.close()


async def run(args: argparse.Namespace) -> dict[str, object]:
    files = tracks(args.tracks_dir, args.tracks)
    url = await recreate_database(args.admin_dsn, args.db_name)
    compact_rows = Settings(_env_file=None).compact_delta_rows  # type: ignore[call-arg]
    store = PostgresStore(url, DEFAULT_PARAMS.version, compact_delta_rows=compact_rows)
    await store.open()
    audio_s = fingerprints = songs = 0
    started = time.monotonic()
    loop = asyncio.get_running_loop()
    try:
        with ProcessPoolExecutor(args.workers) as pool:
            futures = [
                loop.run_in_executor(pool, analyse_file, str(p), DEFAULT_PARAMS) for p in files
            ]
            for path, future in zip(files, futures, strict=True):
                audio: AnalysedAudio = await future
                song, created = await index_analysed(store, audio, None, path.name)
                if created:
                    audio_s += song.duration_s
                    fingerprints += song.fingerprint_count
                    songs += 1
        load_s = time.monotonic() - started
        loaded = await sizes(url)
        await old_optimize(store, url)
        vacuumed = await sizes(url)
        started = time.monotonic()
        await store.optimize()
        optimize_s = time.monotonic() - started
        optimized = await sizes(url)
    finally:
        await store.close()
    return {
        "songs": songs,
        "audio_s": audio_s,
        "fingerprints": fingerprints,
        "compact_delta_rows": compact_rows,
        "load_s": load_s,
        "optimize_s": optimize_s,
        "steps": [loaded, vacuumed, optimized],
        "source": str(args.tracks_dir or corpus_dir()),
    }


def report(r: dict[str, object], command: str) -> list[str]:
    hours = float(r["audio_s"]) / 3600  # type: ignore[arg-type]
    steps: list[dict] = r["steps"]  # type: ignore[assignment]

    def mb(n: int) -> str:
        return f"{n / 1e6:.2f}"

    def per_h(n: int) -> str:
        return f"{n / 1e6 / hours:.1f}"

    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, PostgreSQL on the same host; "
        f"Python {platform.python_version()}. Measured "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M')} UTC.",
        "",
        f"{r['songs']} songs, {hours:.2f} h of audio, {r['fingerprints']:,} fingerprints "
        f"({r['fingerprints'] / float(r['audio_s']):.0f} per second of audio), from "  # type: ignore[operator]
        f"`{r['source']}`; indexed in {r['load_s']:.0f} s with COMPACT_DELTA_ROWS "
        f"{r['compact_delta_rows']:,} (delta rows left after the load: "
        f"{steps[0]['delta_rows']:,}); `optimize()` took {r['optimize_s']:.1f} s.",
        "",
        "| relation | after the load, MB | compaction + VACUUM, MB | `optimize()` (rebuilds the "
        "delta's indexes), MB |",
        "|---|---|---|---|",
    ]
    names = [(t, n, k) for t, n, k, _ in steps[0]["relations"]]
    for i, (table, name, kind) in enumerate(names):
        values = [s["relations"][i][3] for s in steps]
        label = {"heap": table, "index": f"{table}: index `{name}`"}.get(kind, f"{table}: {kind}")
        lines.append(f"| {label} | " + " | ".join(mb(v) for v in values) + " |")

    def total(step: dict, tables: list[str]) -> int:
        return sum(b for t, _, _, b in step["relations"] if t in tables)

    index_totals = [total(s, INDEX_TABLES) for s in steps]
    lines += [
        "| **fingerprint index** (postings + delta + tombstones) | "
        + " | ".join(f"**{mb(v)}**" for v in index_totals)
        + " |",
        "| whole database (`pg_database_size`) | "
        + " | ".join(mb(int(s["database"])) for s in steps)
        + " |",
        "| **fingerprint index, MB per hour of audio** | "
        + " | ".join(f"**{per_h(v)}**" for v in index_totals)
        + " |",
        "| whole database, MB per hour of audio | "
        + " | ".join(per_h(int(s["database"])) for s in steps)
        + " |",
    ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--db-name", default="sd_storage_delta_bench")
    parser.add_argument("--tracks", type=int, default=None, help="at most this many tracks")
    parser.add_argument(
        "--tracks-dir", type=Path, default=None, help="a folder of audio instead of the corpus"
    )
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the database")
    parser.add_argument("--write", action="store_true", help="write the table to BENCHMARKS.md")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    command = this_command("benchmarks.storage", None if args.tracks_dir else corpus_dir())
    lines = report(result, command)
    print("\n".join(lines))
    if args.write:
        write_section("storage", HEADING, command, lines)
    if not args.keep:

        async def drop() -> None:
            conn = await asyncpg.connect(args.admin_dsn)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{args.db_name}" WITH (FORCE)')
            finally:
                await conn.close()

        asyncio.run(drop())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

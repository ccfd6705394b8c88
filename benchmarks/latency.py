"""`POST /identify` latency and memory per request against catalogue size, for the index
formats side by side ("fp1" landmarks, "fp2" landmarks and speed-invariant triplets).

Per format (`--formats fp1,fp2`), the corpus's indexed tracks (`queries/dev/index_tracks.csv`,
else the manifest's `indexed=1` rows) are indexed once through `song-detection index` under
that FINGERPRINT_FORMAT into `<database>_<format>_real`; each size (`--sizes 1000,10000,30000`)
is a copy of it (`CREATE DATABASE ... TEMPLATE`), `<database>_<format>_<songs>`, grown with
synthetic 4-minute songs whose hashes follow the distribution of the real ones, landmarks and
triplets in their proportions, at as many fingerprints per second of song as the real songs
store (benchmarks/catalogue_growth.py, benchmarks/hash_space.py). Every size keeps its
database, so a size can be measured again later on the same catalogues (`--again`) without
growing it again.

At each size, both formats' services (`song-detection serve`, PostgreSQL store,
`CPU_WORKERS=1`) run at once and the clips (benchmarks/latency_clips.py: known, unknown,
speed-changed and noisy 10-s clips) go to them one request at a time, alternating between the
formats clip by clip, so the ratios are measured side by side. Each request records:

1. server-side ms (the response's `elapsed_ms`, decode to answer) and client-side ms;
2. the resident memory it added to the pool worker that decodes and fingerprints and to the
   service's own process that looks up and votes (benchmarks/process_memory.py: high-water
   mark reset before the request, read after).

Beside the HTTP figures, fp1's pipeline runs in this process with a timer per stage
(benchmarks/latency_profile.py), and the fingerprint tables' bytes per hour of audio are read.

Results accumulate in `--results` (JSON, one entry per size), so a later run can add a size
without repeating the earlier ones, or measure them again (`--again`); `--write` puts every
size measured so far into the `latency` block of BENCHMARKS.md (benchmarks/latency_report.py).
`--answers FILE` writes every request's matches (songs as corpus track ids, or `synthetic-N`)
as sorted JSON lines (benchmarks/answers.py), for `benchmarks/compare_answers.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import asyncpg
import numpy as np

from benchmarks.accuracy import corpus_dir
from benchmarks.answers import commit, write_answers
from benchmarks.benchmarks_md import this_command, write_section
from benchmarks.catalogue_growth import catalogue_hash_distribution, catalogue_size, rebuild
from benchmarks.indexing import _url, real_fingerprints_per_s, recreate_database
from benchmarks.latency_clips import (
    FAST_CONDITIONS,
    SPEED_CONDITIONS,
    Service,
    add_song_digests,
    answer_rows,
    dev_clips,
    indexed_name,
    interleaved,
    queries_dir,
    track_digests,
)
from benchmarks.latency_profile import stage_profile
from benchmarks.latency_report import report
from benchmarks.process_memory import PROC, pool_children, status_kib
from benchmarks.service_process import ROOT, ServiceSpec, running_service_process
from service.match import MatchParams

SECTION = "## Identify latency against catalogue size (`benchmarks/latency.py`)"
#: Known clips each service answers before the measured requests (the processes' size at
#: rest is read after them).
WARM_UP_CLIPS = 3


# --- the catalogues ---------------------------------------------------------------------------


def indexed_tracks() -> list[str]:
    """Corpus paths of the tracks to index: the query set's list, else the manifest's
    development tracks marked indexed."""
    listed = queries_dir() / "index_tracks.csv"
    if listed.exists():
        with listed.open() as f:
            return [r["path"] for r in csv.DictReader(f)]
    with (corpus_dir() / "manifest.csv").open() as f:
        return [
            r["path"]
            for r in csv.DictReader(f)
            if r["indexed"] == "1" and r.get("set", "dev") == "dev"
        ]


def index_real_tracks(url: str, workers: int, fingerprint_format: str) -> float:
    """Index the corpus's indexed tracks with `song-detection index` (symlinks) under
    `fingerprint_format`; seconds."""
    root = corpus_dir()
    folder = Path(tempfile.mkdtemp(prefix="sd_latency_real_"))
    for path in indexed_tracks():
        (folder / indexed_name(path)).symlink_to(root / path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "DB_"))}
    env.update(DATABASE_URL=url, FINGERPRINT_FORMAT=fingerprint_format)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "service.cli", "index", str(folder), "--workers", str(workers)],
        check=True, env=env, cwd=ROOT,
    )  # fmt: skip
    return time.perf_counter() - started


def database(args: argparse.Namespace, fingerprint_format: str, songs: int | str) -> str:
    return f"{args.database}_{fingerprint_format}_{songs}"


async def database_exists(admin_dsn: str, name: str) -> bool:
    conn = await asyncpg.connect(admin_dsn)
    try:
        return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await conn.close()


async def copy_database(admin_dsn: str, template: str, name: str) -> str:
    """`name` afresh as a copy of `template` (a file copy: no other session may use it)."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await conn.close()
    return _url(admin_dsn, name)


async def real_catalogue(args: argparse.Namespace, fingerprint_format: str) -> str:
    """The URL of the format's catalogue of real tracks, indexed when it is not there yet (or
    again with --index-real)."""
    name = database(args, fingerprint_format, "real")
    if not args.index_real and await database_exists(args.admin_dsn, name):
        return _url(args.admin_dsn, name)
    url = await recreate_database(args.admin_dsn, name)
    seconds = index_real_tracks(url, args.workers, fingerprint_format)
    print(f"{fingerprint_format}: indexed the real tracks in {seconds:.0f} s", file=sys.stderr)
    return url


async def catalogue_of_size(
    args: argparse.Namespace, fingerprint_format: str, songs: int, known: dict | None
) -> tuple[str, dict[str, object]]:
    """The format's catalogue of `songs` songs, as it stands when it holds that many (and how
    it was grown, from `known`), else copied from the real tracks' and grown; (URL, load)."""
    name = database(args, fingerprint_format, songs)
    url = _url(args.admin_dsn, name)
    if (
        not args.regrow
        and await database_exists(args.admin_dsn, name)
        and (await catalogue_size(url))["songs"] == songs
    ):
        return url, (known or {"how": "as is"})
    real = await real_catalogue(args, fingerprint_format)
    cache = Path(args.results).with_suffix(f".{fingerprint_format}.held-out.p.npy")
    if cache.exists():
        p = np.load(cache)
    else:
        p = await catalogue_hash_distribution(real)
        np.save(cache, p)
    fps_per_s = await real_fingerprints_per_s(real)
    print(f"{fingerprint_format}: growing to {songs} songs", file=sys.stderr, flush=True)
    await copy_database(args.admin_dsn, database(args, fingerprint_format, "real"), name)
    added, load_s = await rebuild(url, songs, p, seed=songs, fps_per_s=fps_per_s)
    print(
        f"   {added:,} postings in {load_s:.0f} s ({fps_per_s:.1f} fingerprints per second of "
        "synthetic song, as the real songs store)",
        file=sys.stderr,
        flush=True,
    )
    return url, {"postings": added, "seconds": load_s, "how": "rebuild", "fps_per_s": fps_per_s}


async def prewarm(url: str) -> dict[str, float]:
    """Load the postings and their index into PostgreSQL's buffer cache (pg_prewarm).

    Every query touches a few thousand postings rows spread over the whole table, so a
    production database serves lookups from memory only when its buffer cache holds the
    table; measured without this, the first request of each clip pays for reading its pages
    in and the figures depend on which clips ran before. Returns the table size and the
    configured shared_buffers, for the report.
    """
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        for relation in ("fp_postings", "fp_postings_pkey"):
            await conn.fetchval("SELECT pg_prewarm($1::regclass)", relation)
        table = await conn.fetchval("SELECT pg_total_relation_size('fp_postings')")
        buffers = await conn.fetchval(
            "SELECT setting::bigint * 8192 FROM pg_settings WHERE name = 'shared_buffers'"
        )
    finally:
        await conn.close()
    return {"postings_bytes": float(table), "shared_buffers_bytes": float(buffers)}


# --- one catalogue size -----------------------------------------------------------------------


def _rss_mb(pid: int) -> float:
    return status_kib((PROC / str(pid) / "status").read_text(), "VmRSS") / 1024


def idle_memory(pid: int) -> dict[str, float]:
    """Resident MB of the service's process and its pool worker at rest."""
    workers = pool_children(pid)
    return {
        "service_rss_mb": _rss_mb(pid),
        "pool_rss_mb": max((_rss_mb(w) for w in workers), default=0.0),
    }


async def measure_size(urls: dict[str, str], args: argparse.Namespace) -> dict[str, object]:
    fast = dev_clips(FAST_CONDITIONS, args.clips, seed=1)
    slow = dev_clips(SPEED_CONDITIONS, args.speed_clips, seed=2)
    unknown = dev_clips(FAST_CONDITIONS, args.unknown_clips, seed=3, indexed=False)
    formats: dict[str, dict] = {}
    for fmt, url in urls.items():
        size = await catalogue_size(url)
        size.update(await prewarm(url))
        size["cap"] = float(MatchParams().max_postings(int(size["fingerprints"])) or 0)
        formats[fmt] = {"size": size}
    samples = []
    load_before = os.getloadavg()[0]
    with ExitStack() as stack:
        services = []
        for fmt, url in urls.items():
            base, pid = stack.enter_context(
                running_service_process(
                    ServiceSpec(
                        url, cpu_workers=args.cpu_workers, extra_env={"FINGERPRINT_FORMAT": fmt}
                    )
                )
            )
            services.append(Service(fmt, base, pid))
        try:
            for service in services:
                formats[service.format]["started"] = idle_memory(service.pid)
            # What a serving process holds whatever it is asked (imports, pools, caches the
            # first requests fill) is no request's: the processes' size at rest is read after
            # the warm-up requests, known clips, as well as before them (the service's bound
            # counts from there: a warm-up clip may climb the tiers; latency_report).
            await interleaved(services, fast[:WARM_UP_CLIPS], warm=0)
            for service in services:
                formats[service.format]["idle"] = idle_memory(service.pid)
            for repeat in range(args.repeats):
                samples += await interleaved(services, fast, repeat=repeat, warm=0)
            # The speed search reads ~20x the hits of an own-speed lookup: a few clips, once.
            samples += await interleaved(services, slow, warm=0)
            # Unknown music goes through every tier: a few clips, once.
            samples += await interleaved(services, unknown, warm=0)
        finally:
            for service in services:
                await service.close()
    for fmt, url in urls.items():
        await add_song_digests(url, [s for s in samples if s["format"] == fmt])
    if "fp1" in urls and args.profile:
        profiled = (
            fast[:: max(1, len(fast) // 6)] + slow[:2] + unknown[:: max(1, len(unknown) // 2)]
        )
        formats["fp1"]["profile"] = await stage_profile(urls["fp1"], profiled)
    return {
        "formats": formats,
        "samples": samples,
        "measured": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()),
        # The machine is shared: the 1-minute load average before and after the requests.
        "load_average": [load_before, os.getloadavg()[0]],
        "commit": commit(),
    }


async def run(args: argparse.Namespace) -> dict[str, dict]:
    results_path = Path(args.results)
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for songs in args.sizes:
        if str(songs) in results and not args.again:
            continue
        urls, loads = {}, {}
        for fmt in args.formats:
            known = results.get(str(songs), {}).get("formats", {}).get(fmt, {}).get("load")
            urls[fmt], loads[fmt] = await catalogue_of_size(args, fmt, songs, known)
        if args.grow_only:
            continue
        measured = await measure_size(urls, args)
        for fmt in args.formats:
            held = measured["formats"][fmt]["size"]["songs"]
            if held != songs:
                raise RuntimeError(f"the {fmt} catalogue holds {held:.0f} songs")
            measured["formats"][fmt]["load"] = loads[fmt]
        results[str(songs)] = measured
        results_path.write_text(json.dumps(results))
        print("\n".join(report({str(songs): measured})), file=sys.stderr, flush=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument(
        "--database", default="sd_curve", help="prefix: <database>_<format>_<songs or real>"
    )
    parser.add_argument("--formats", type=lambda s: [x for x in s.split(",") if x],
                        default=["fp1", "fp2"])  # fmt: skip
    parser.add_argument(
        "--index-real", action="store_true", help="index the real tracks again (else reused)"
    )
    parser.add_argument("--workers", type=int, default=1, help="for indexing")
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",") if x],
                        default=[1000, 10000, 30000])  # fmt: skip
    parser.add_argument("--clips", type=int, default=12, help="per own-speed condition")
    parser.add_argument("--speed-clips", type=int, default=2, help="per speed condition")
    parser.add_argument(
        "--unknown-clips", type=int, default=4, help="per own-speed condition, unindexed tracks"
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cpu-workers", type=int, default=1)
    parser.add_argument("--results", default=str(Path(tempfile.gettempdir()) / "sd_latency.json"))
    parser.add_argument("--again", action="store_true", help="re-measure sizes already done")
    parser.add_argument(
        "--regrow", action="store_true", help="grow a size's catalogue again even if it exists"
    )
    parser.add_argument(
        "--grow-only", action="store_true", help="build the catalogues, measure nothing"
    )
    parser.add_argument(
        "--no-profile", dest="profile", action="store_false", help="skip fp1's stage profile"
    )
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    parser.add_argument("--answers", help="write every request's matches to this JSON-lines file")
    args = parser.parse_args()
    at_commit = commit()
    results = asyncio.run(run(args))
    if not results:
        return 0
    lines = report(results)
    print("\n".join(lines))
    if args.answers:
        rows = answer_rows(results, track_digests(args.workers))
        write_answers(args.answers, "latency", rows, at_commit)
    if args.write:
        write_section("latency", SECTION, this_command("benchmarks.latency"), lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

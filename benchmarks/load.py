"""Throughput of `POST /identify` under concurrent clients, with the event loop watched.

The service (`song-detection serve`, `CPU_WORKERS=1`) is pinned to one core with taskset and
this load generator to the other (sched_setaffinity), so the figures are what one core of API
serves; PostgreSQL runs unpinned on the same host. For each concurrency level, that many
clients send 10-s MP3 clips (`mp3_64k` clips of indexed tracks) back to back for `--duration`
seconds; requests still in flight when it ends are awaited and counted. Meanwhile a probe in
its own process calls `GET /healthz` every 200 ms: its latency is the service's event-loop
responsiveness while identifies run (target < 50 ms).

The catalogue must exist (benchmarks/latency.py builds one per format and size:
`--database sd_curve_fp1_10000` after its 10k step). `--write` replaces the `load` block of
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import os
import platform
import sys
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event as EventType

import httpx
import numpy as np

from benchmarks.benchmarks_md import this_command, write_section
from benchmarks.catalogue_growth import catalogue_size
from benchmarks.indexing import _url
from benchmarks.latency_clips import Clip, dev_clips
from benchmarks.service_process import ServiceSpec, running_service

SECTION = "## Identify under load (`benchmarks/load.py`)"

HEALTH_INTERVAL_S = 0.2


async def _client(
    client: httpx.AsyncClient, clips: itertools.cycle, until: float, out: list[dict]
) -> None:
    while time.perf_counter() < until:
        clip: Clip = next(clips)
        data = clip.path.read_bytes()
        started = time.perf_counter()
        try:
            response = await client.post("/identify", files={"file": (clip.path.name, data)})
            ok = response.status_code == 200
            server_ms = response.json().get("elapsed_ms") if ok else None
        except httpx.HTTPError:
            ok, server_ms = False, None
        out.append({"ok": ok, "ms": (time.perf_counter() - started) * 1000, "server_ms": server_ms})


def _health_probe(base: str, cpu: int, stop: EventType, out: Queue) -> None:
    """Runs in its own process: this script's event loop, busy building uploads on a shared
    core, stalled for hundreds of ms at a time and would have been measured as the service's."""
    os.sched_setaffinity(0, {cpu})
    latencies = []
    with httpx.Client(base_url=base, timeout=30) as client:
        while not stop.is_set():
            started = time.perf_counter()
            client.get("/healthz").raise_for_status()
            latencies.append((time.perf_counter() - started) * 1000)
            stop.wait(HEALTH_INTERVAL_S)
    out.put(latencies)


async def one_level(base: str, clips: list[Clip], concurrency: int, duration_s: float) -> dict:
    """`concurrency` clients for `duration_s`, with the health probe alongside."""
    results: list[dict] = []
    ctx = multiprocessing.get_context("spawn")
    stop, queue = ctx.Event(), ctx.Queue()
    probe = ctx.Process(
        target=_health_probe, args=(base, os.sched_getaffinity(0).pop(), stop, queue)
    )
    probe.start()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=900, limits=limits) as client:
        started = time.perf_counter()
        until = started + duration_s
        cycle = itertools.cycle(clips)
        await asyncio.gather(*(_client(client, cycle, until, results) for _ in range(concurrency)))
        wall_s = time.perf_counter() - started
    stop.set()
    health: list[float] = queue.get(timeout=60)
    probe.join(10)
    ok = [r["ms"] for r in results if r["ok"]]
    server = [r["server_ms"] for r in results if r["ok"]]
    return {
        "concurrency": concurrency,
        "requests": len(results),
        "errors": len(results) - len(ok),
        "wall_s": wall_s,
        "rps": len(ok) / wall_s,
        "p50_ms": float(np.percentile(ok, 50)),
        "p95_ms": float(np.percentile(ok, 95)),
        "max_ms": float(max(ok)),
        "server_p50_ms": float(np.percentile(server, 50)),
        "health_n": len(health),
        "health_p50_ms": float(np.percentile(health, 50)),
        "health_p95_ms": float(np.percentile(health, 95)),
        "health_max_ms": float(max(health)),
    }


def report(size: dict[str, float], levels: list[dict], duration_s: float) -> list[str]:
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f} when the report was written; service pinned to core 0 "
        "(`taskset -c 0`, `CPU_WORKERS=1`), this load generator to core 1, PostgreSQL "
        f"unpinned on the same host. Python {platform.python_version()}. Measured "
        f"{time.strftime('%Y-%m-%d')}.",
        "",
        f"**`POST /identify` under load**, {size['songs']:,.0f}-song catalogue "
        f"({size['hours']:,.0f} h), 10-s MP3 clips (`mp3_64k`), {duration_s:.0f} s per level; "
        "health = `GET /healthz` every 200 ms from a separate process during the run:",
        "",
        "| clients | requests | errors | identify/s | p50 ms | p95 ms | max ms | server p50 ms "
        "| health n | health p50 ms | health p95 ms | health max ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in levels:
        lines.append(
            f"| {r['concurrency']} | {r['requests']} | {r['errors']} | {r['rps']:.2f} | "
            f"{r['p50_ms']:,.0f} | {r['p95_ms']:,.0f} | {r['max_ms']:,.0f} | "
            f"{r['server_p50_ms']:,.0f} | {r['health_n']} | {r['health_p50_ms']:.1f} | "
            f"{r['health_p95_ms']:.1f} | {r['health_max_ms']:.1f} |"
        )
    return lines


async def run(args: argparse.Namespace) -> list[str]:
    url = _url(args.admin_dsn, args.database)
    size = await catalogue_size(url)
    clips = dev_clips(("mp3_64k",), args.clips, seed=3)
    levels = []
    with running_service(ServiceSpec(url, cpu_workers=1, cpus=args.service_cpu)) as base:
        async with httpx.AsyncClient(base_url=base, timeout=900) as client:
            for clip in clips[:3]:  # warm: pool workers, prepared statements, song cache
                await client.post(
                    "/identify", files={"file": (clip.path.name, clip.path.read_bytes())}
                )
        for concurrency in args.concurrency:
            print(f"{concurrency} clients", file=sys.stderr, flush=True)
            levels.append(await one_level(base, clips, concurrency, args.duration))
            print(f"   {levels[-1]}", file=sys.stderr, flush=True)
    return report(size, levels, args.duration)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--database", default="sd_latency_cat")
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")],
                        default=[8, 32])  # fmt: skip
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per level")
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--service-cpu", default="0")
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.client_cpu})
    lines = asyncio.run(run(args))
    print("\n".join(lines))
    if args.write:
        write_section("load", SECTION, this_command("benchmarks.load"), lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

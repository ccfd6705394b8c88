"""What JSON logging and Prometheus metrics cost `POST /identify`, side by side in one run.

Two real services (`song-detection serve`, CPU_WORKERS=1 each, pinned to the same core) answer
the same 10-s clips from one SQLite catalogue of synthetic songs:

- **on**: as deployed, LOG_FORMAT=json at LOG_LEVEL=INFO (an access line and an
  `identify.result` line per request, written to a file), metrics recorded, and `/metrics`
  scraped every 10 requests as Prometheus would;
- **off**: LOG_LEVEL=WARNING (no line per request) and prometheus-client's recording methods
  replaced by no-ops (benchmarks/telemetry_off.py).

Requests alternate between the two in a random order each round, one at a time, so drift on
the shared machine falls on both alike. The table gives client-side and server-side
(`elapsed_ms`) medians and p95s, the on/off ratio of the medians with a bootstrap 95 %
interval, and, as the noise floor, the same ratio between the two halves of the *off*
samples. `--write` puts the table into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

from benchmarks.benchmarks_md import this_command, write_section
from benchmarks.service_process import ROOT, ServiceSpec, running_service

RATE_HZ = 22050


def synth_song(rng: np.random.Generator, duration_s: float) -> np.ndarray:
    """Random notes with harmonics and decaying envelopes: music enough for landmarks."""
    n = int(duration_s * RATE_HZ)
    out = np.zeros(n, dtype=np.float32)
    start_s = 0.0
    while start_s < duration_s:
        freq_hz = 110.0 * 2 ** (rng.integers(0, 48) / 12)
        i0 = int(start_s * RATE_HZ)
        i1 = min(n, int((start_s + rng.uniform(0.2, 0.8)) * RATE_HZ))
        t = np.arange(i1 - i0) / RATE_HZ
        tone = sum(np.sin(2 * np.pi * freq_hz * k * t) / k for k in (1, 2, 3))
        out[i0:i1] += (np.exp(-t * rng.uniform(2, 8)) * tone).astype(np.float32)
        start_s += rng.uniform(0.1, 0.3)
    return 0.8 * out / np.abs(out).max()


def write_wav(samples: np.ndarray, path: Path) -> Path:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(RATE_HZ)
        f.writeframes((samples * 32767).astype("<i2").tobytes())
    return path


@dataclass
class Side:
    name: str
    url: str
    client_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    #: Answers whose best match is the song the clip was cut from.
    right: int = 0


def identify(client: httpx.Client, side: Side, clip: Path, song: str, record: bool) -> None:
    started = time.perf_counter()
    response = client.post(f"{side.url}/identify", files={"file": (clip.name, clip.read_bytes())})
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    response.raise_for_status()
    if record:
        body = response.json()
        side.client_ms.append(elapsed_ms)
        side.server_ms.append(body["elapsed_ms"])
        side.right += bool(body["matches"]) and body["matches"][0]["song"]["title"] == song


def p95(values: list[float]) -> float:
    return float(np.percentile(values, 95))


def ratio_interval(on: list[float], off: list[float], seed: int = 7) -> tuple[float, float]:
    """Bootstrap 95 % interval of median(on) / median(off)."""
    rng = np.random.default_rng(seed)
    a, b = np.asarray(on), np.asarray(off)
    ratios = [
        np.median(rng.choice(a, a.size)) / np.median(rng.choice(b, b.size)) for _ in range(2000)
    ]
    low, high = np.percentile(ratios, [2.5, 97.5])
    return float(low), float(high)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--songs", type=int, default=20, help="catalogue size (60-s songs)")
    parser.add_argument("--rounds", type=int, default=100, help="requests per side")
    parser.add_argument("--cpus", default="0", help="core the services are pinned to")
    parser.add_argument("--write", action="store_true", help="write the table to BENCHMARKS.md")
    args = parser.parse_args()

    rng = np.random.default_rng(2026)
    with tempfile.TemporaryDirectory(prefix="telemetry-bench-") as tmp:
        folder = Path(tmp)
        songs_dir = folder / "songs"
        songs_dir.mkdir()
        songs = [synth_song(rng, 60.0) for _ in range(args.songs)]
        for i, song in enumerate(songs):
            write_wav(song, songs_dir / f"song{i:03d}.wav")
        clips = []
        for i, song in enumerate(songs):
            offset = int(rng.uniform(0, 50) * RATE_HZ)
            noisy = song[offset : offset + 10 * RATE_HZ] + rng.normal(0, 0.02, 10 * RATE_HZ)
            clips.append(write_wav(noisy.astype(np.float32), folder / f"clip{i:03d}.wav"))
        database_url = f"sqlite:///{folder / 'catalogue.sqlite3'}"
        env = {**os.environ, "DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"}
        subprocess.run(
            [sys.executable, "-m", "service.cli", "index", str(songs_dir), "--workers", "1"],
            env=env,
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        on_env = {"LOG_FORMAT": "json", "LOG_LEVEL": "INFO"}
        off_env = {"LOG_LEVEL": "WARNING"}
        log_path = folder / "on.log"
        with (
            running_service(
                ServiceSpec(
                    database_url, cpu_workers=1, cpus=args.cpus, extra_env=on_env, log_path=log_path
                )
            ) as on_url,
            running_service(
                ServiceSpec(
                    database_url,
                    cpu_workers=1,
                    cpus=args.cpus,
                    extra_env=off_env,
                    module="benchmarks.telemetry_off",
                    log_path=folder / "off.log",
                )
            ) as off_url,
            httpx.Client(timeout=120) as client,
        ):
            on, off = Side("on", on_url), Side("off", off_url)
            order = random.Random(11)
            for i in range(args.rounds + 5):
                clip = clips[i % len(clips)]
                pair = [on, off]
                order.shuffle(pair)
                song = f"song{i % len(clips):03d}"
                for side in pair:
                    identify(client, side, clip, song, record=i >= 5)  # 5 warm-up rounds
                if i % 10 == 0:
                    client.get(f"{on_url}/metrics").raise_for_status()
        lines_logged = sum(1 for _ in log_path.open())

    low, high = ratio_interval(on.client_ms, off.client_ms)
    half = len(off.client_ms) // 2
    floor = statistics.median(off.client_ms[:half]) / statistics.median(off.client_ms[half:])
    rows = [
        "| side | requests | right song | client p50 ms | client p95 ms | server p50 ms "
        "| server p95 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for side in (on, off):
        rows.append(
            f"| {side.name} | {len(side.client_ms)} | {side.right} | "
            f"{statistics.median(side.client_ms):.1f} | "
            f"{p95(side.client_ms):.1f} | {statistics.median(side.server_ms):.1f} | "
            f"{p95(side.server_ms):.1f} |"
        )
    ratio = statistics.median(on.client_ms) / statistics.median(off.client_ms)
    server_ratio = statistics.median(on.server_ms) / statistics.median(off.server_ms)
    load = os.getloadavg()[0]
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, load average {load:.1f} when "
        f"the report was written; both services pinned to core {args.cpus} (`taskset`, "
        f"`CPU_WORKERS=1`), this client unpinned. Python {platform.python_version()}. "
        f"Measured {datetime.now(UTC):%Y-%m-%d}.",
        "",
        f"**`POST /identify` with and without logs and metrics**, {args.songs} synthetic 60-s "
        f"songs (SQLite), 10-s WAV clips with light noise, {args.rounds} requests per side "
        f"alternating in random order; the *on* side wrote {lines_logged} JSON log lines:",
        "",
        *rows,
        "",
        f"on / off, client p50: **{ratio:.3f}** (bootstrap 95 % interval {low:.3f}-{high:.3f}); "
        f"server p50: {server_ratio:.3f}. Noise floor, off's first half / second half: "
        f"{floor:.3f}.",
    ]
    print("\n".join(lines))
    if args.write:
        write_section(
            "telemetry-overhead",
            "## Logging and metrics overhead (`benchmarks/telemetry_overhead.py`)",
            this_command("benchmarks.telemetry_overhead"),
            lines,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The clips benchmarks/latency.py sends, the requests themselves (time and memory), and the
answers they got.

Clips are 10-s clips of the development query set in four kinds: known clips of the indexed
tracks that settle at their own speed (`mp3_64k`: MP3 64 kbit/s, `clean`: WAV); unknown clips,
the same conditions of the corpus's unindexed tracks (`indexed=0`: music the catalogue lacks,
which the service must answer with no match); speed-changed clips (`speed_m5`: 5 % slow); and
noisy ones (`white_snrm5`: white noise at -5 dB SNR). Clips of indexed tracks come from the
songs the synthetic songs' distribution holds out (benchmarks/hash_space.held_out), as a real
catalogue's other songs would not repeat their rare hashes.
"""

from __future__ import annotations

import csv
import multiprocessing
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx

from benchmarks.accuracy import corpus_dir
from benchmarks.hash_space import held_out
from benchmarks.process_memory import PeakProbe, pool_children
from service.audio.decode import decode_audio
from service.audio.params import DEFAULT_PARAMS
from service.core.index import resolve_meta

FAST_CONDITIONS = ("mp3_64k", "clean")
SPEED_CONDITIONS = ("speed_m5", "white_snrm5")
#: The report's rows: each kind of clip, and what it is.
KINDS = (
    ("known", "known: `mp3_64k` + `clean` (own speed)"),
    ("unknown", "unknown: `mp3_64k` + `clean` of unindexed tracks"),
    ("speed", "speed-changed: `speed_m5`"),
    ("noisy", "noisy: `white_snrm5`"),
)
KIND_OF_CONDITION = {
    "mp3_64k": "known",
    "clean": "known",
    "speed_m5": "speed",
    "white_snrm5": "noisy",
}
#: What an answer says of each match beside its song (the API's MatchOut fields).
MATCH_FIELDS = (
    "song_offset_s", "confidence", "score", "speed", "evidence", "query_start_s", "query_end_s"
)  # fmt: skip


@dataclass(frozen=True)
class Clip:
    path: Path
    condition: str
    track_id: str
    #: The title its track is indexed under by `song-detection index`; "" for unindexed tracks.
    title: str = ""
    #: The report row it belongs to: "known", "unknown", "speed" or "noisy" (KINDS).
    kind: str = "known"


def queries_dir() -> Path:
    return corpus_dir() / "queries" / "dev"


def dev_clips(
    conditions: tuple[str, ...], per_condition: int, seed: int, indexed: bool = True
) -> list[Clip]:
    """10-s clips from the development query set, `per_condition` each: of indexed tracks
    held out of the synthetic songs' distribution (benchmarks/hash_space.held_out), or with
    `indexed=False` of the unindexed ones (the "unknown" kind)."""
    root = queries_dir()
    flag = "1" if indexed else "0"
    with (root / "index_tracks.csv").open() as f:
        paths = {r["track_id"]: r["path"] for r in csv.DictReader(f)}
    with (root / "queries.csv").open() as f:
        rows = [
            r
            for r in csv.DictReader(f)
            if r["indexed"] == flag
            and r["clip_len_s"] == "10"
            and (not indexed or held_out_track(paths[r["track_id"]]))
        ]
    rng = random.Random(seed)
    clips = []
    for condition in conditions:
        chosen = [r for r in rows if r["condition"] == condition]
        for r in rng.sample(chosen, min(per_condition, len(chosen))):
            track = r["track_id"]
            title = _title(paths[track]) if indexed else ""
            kind = KIND_OF_CONDITION[condition] if indexed else "unknown"
            clips.append(Clip(root / r["query_file"], condition, track, title, kind))
    return clips


def kind_of(sample: dict[str, object]) -> str:
    """A sample's kind; results measured before unknown clips existed lack the field."""
    return str(sample.get("kind") or KIND_OF_CONDITION[str(sample["condition"])])


def _title(corpus_path: str) -> str:
    """The title `song-detection index` gives a corpus track: its tags', else its file's."""
    tags = decode_audio(corpus_dir() / corpus_path, DEFAULT_PARAMS.sample_rate_hz).tags
    return resolve_meta(None, tags, str(indexed_name(corpus_path))).title


def indexed_name(corpus_path: str) -> Path:
    """The file name a corpus track is indexed under (its path, flattened)."""
    return Path(corpus_path.replace("/", "_"))


def held_out_track(corpus_path: str) -> bool:
    """Whether the corpus track is held out of the synthetic songs' distribution
    (benchmarks/hash_space.held_out of the name it is indexed under)."""
    return held_out(str(indexed_name(corpus_path)))


# --- requests ---------------------------------------------------------------------------------


class Service:
    """One running service (`song-detection serve`) of one index format, and a client."""

    def __init__(self, fingerprint_format: str, base: str, pid: int) -> None:
        self.format, self.base, self.pid = fingerprint_format, base, pid
        self.client = httpx.AsyncClient(base_url=base, timeout=600)

    async def close(self) -> None:
        await self.client.aclose()

    async def identify(self, clip: Clip, repeat: int) -> dict[str, object]:
        """One request; its kind, condition, server and client ms, whether the top match is a
        real song and the right answer (for an unknown clip: no match), the matches (song id
        and what the API says of each), and the resident MB the request added to the pool
        worker doing its CPU work and to the service's own process (lookups and voting)."""
        workers = pool_children(self.pid)
        probes = {"pool": [PeakProbe(p) for p in workers], "service": [PeakProbe(self.pid)]}
        data = clip.path.read_bytes()
        for probe in (*probes["pool"], *probes["service"]):
            probe.reset()
        started = time.perf_counter()
        response = await self.client.post("/identify", files={"file": (clip.path.name, data)})
        client_ms = (time.perf_counter() - started) * 1000
        memory = {k: [p.read() for p in v] for k, v in probes.items()}
        response.raise_for_status()
        body = response.json()
        top = body["matches"][0]["song"] if body["matches"] else None
        right = top is None if clip.kind == "unknown" else bool(top and top["title"] == clip.title)
        return {
            "format": self.format,
            "condition": clip.condition,
            "kind": clip.kind,
            "clip": str(clip.path.relative_to(queries_dir())),
            "track_id": clip.track_id,
            "repeat": repeat,
            "server_ms": body["elapsed_ms"],
            "client_ms": client_ms,
            "real_top": bool(top and not top["title"].startswith("synthetic ")),
            "right_top": right,
            # With CPU_WORKERS=1, one pool worker: the most any of them added.
            "pool_added_mb": max((m["added_mb"] for m in memory["pool"]), default=0.0),
            "pool_peak_mb": max((m["peak_mb"] for m in memory["pool"]), default=0.0),
            "service_added_mb": memory["service"][0]["added_mb"],
            "service_peak_mb": memory["service"][0]["peak_mb"],
            "matches": [
                {"song_id": m["song"]["id"], **{f: m[f] for f in MATCH_FIELDS}}
                for m in body["matches"]
            ],
        }


async def interleaved(
    services: list[Service], clips: list[Clip], warm: int = 3, repeat: int = 0
) -> list[dict[str, object]]:
    """Every clip through every service, one request at a time, clip by clip, the services'
    order turning with each clip so that none always goes first; the first `warm` clips are
    sent beforehand and not recorded."""
    for clip in clips[:warm]:
        for service in services:
            await service.identify(clip, repeat)
    samples = []
    for i, clip in enumerate(clips):
        turn = i % len(services)
        for service in services[turn:] + services[:turn]:
            samples.append(await service.identify(clip, repeat))
    return samples


# --- answers ----------------------------------------------------------------------------------


async def add_song_digests(url: str, samples: list[dict]) -> None:
    """Name each match's song by its content digest (`synthetic-N` for synthetic songs): ids
    depend on the order songs were indexed in, which the worker pool does not fix."""
    ids = sorted({m["song_id"] for s in samples for m in s["matches"]})
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT id, content_sha256 FROM songs WHERE id = ANY($1::bigint[])", ids
        )
    finally:
        await conn.close()
    digests = {r["id"]: r["content_sha256"] for r in rows}
    for sample in samples:
        for m in sample["matches"]:
            m["song_sha256"] = digests.get(m["song_id"], "")


def _track_digest(args: tuple[str, str]) -> tuple[str, str]:
    track_id, path = args
    return decode_audio(path, DEFAULT_PARAMS.sample_rate_hz).content_sha256, track_id


def track_digests(workers: int) -> dict[str, str]:
    """Corpus track id by content digest, for every indexed track (decoded as indexing does)."""
    root = corpus_dir()
    with (queries_dir() / "index_tracks.csv").open() as f:
        tracks = [(r["track_id"], str(root / r["path"])) for r in csv.DictReader(f)]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        return dict(pool.map(_track_digest, tracks))


def answer_rows(results: dict[str, dict], tracks: dict[str, str]) -> list[dict[str, object]]:
    """One row per request of every size in `results` that recorded its matches."""
    rows = []
    unmapped: set[str] = set()
    for songs_key, r in results.items():
        songs = int(songs_key)
        for s in r["samples"]:
            if "matches" not in s:  # measured before answers were recorded
                continue
            matches = []
            for m in s["matches"]:
                digest = m["song_sha256"]
                song = tracks.get(digest) or (digest if digest.startswith("synthetic-") else None)
                if song is None:
                    unmapped.add(digest)
                    song = f"sha256:{digest}"
                matches.append({"song": song, **{f: m[f] for f in MATCH_FIELDS}})
            top = matches[0] if matches else {}
            fmt = s.get("format", "fp1")
            rows.append(
                {
                    "key": [fmt, songs, s["kind"], s["condition"], s["clip"], s["repeat"]],
                    "format": fmt,
                    "songs": songs,
                    "kind": s["kind"],
                    "condition": s["condition"],
                    "clip": s["clip"],
                    "repeat": s["repeat"],
                    "expected": s["track_id"] if s["kind"] != "unknown" else None,
                    "song": top.get("song"),
                    **{f: top.get(f) for f in MATCH_FIELDS},
                    "matches": matches,
                }
            )
    if unmapped:
        print(f"warning: {len(unmapped)} answered songs match no corpus track", file=sys.stderr)
    return rows

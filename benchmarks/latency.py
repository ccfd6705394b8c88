"""`POST /identify` latency against growing PostgreSQL catalogues, and bytes per hour.

One database, grown step by step (`--sizes 1000,10000,30000[,100000]`): the corpus's indexed
tracks (`queries/dev/index_tracks.csv`) indexed through `song-detection index` (decode,
fingerprint, COPY, compaction), then synthetic 4-minute songs whose hashes follow the
distribution of those real fingerprints (catalogue_growth.py). At each size:

1. the real service (`song-detection serve`, PostgreSQL store) answers 10-s clips from the
   development query set, one request at a time, in four kinds: known clips of the indexed
   tracks that settle at their own speed (`mp3_64k`: MP3 64 kbit/s, `clean`: WAV); unknown
   clips, the same conditions of the corpus's unindexed tracks (`indexed=0`: music the
   catalogue lacks, which the service must answer with no match); speed-changed clips
   (`speed_m5`: 5 % slow); and noisy ones (`white_snrm5`: white noise at -5 dB SNR). The last
   three go through the speed search. Server-side is the response's `elapsed_ms` (decode to
   answer); client-side adds upload, HTTP and JSON.
2. the same pipeline in this process with a timer per stage (decode, fingerprint, lookup SQL
   round trip, decoding the hits, voting, speed variants), to say where the milliseconds go.
3. `pg_total_relation_size` of the fingerprint tables per hour of indexed audio.

The synthetic songs carry as many fingerprints per second of song as the catalogue's real
songs store (their `fingerprint_count` over their duration), so a size's postings are what
that many real songs would hold.

Results accumulate in `--results` (JSON, one entry per size), so a later run can add a size
without repeating the earlier ones; `--write` puts every size measured so far into the
`latency` block of BENCHMARKS.md. `--answers FILE` writes every request's matches (the songs
as corpus track ids, or `synthetic-N`; offsets, confidences, scores, speeds, evidence) of every
size in the results as sorted JSON lines (benchmarks/answers.py), for
`benchmarks/compare_answers.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import json
import multiprocessing
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import numpy as np

from benchmarks import reference_matching
from benchmarks.accuracy import corpus_dir
from benchmarks.answers import commit, write_answers
from benchmarks.benchmarks_md import this_command, write_section
from benchmarks.catalogue_growth import (
    catalogue_hash_distribution,
    catalogue_size,
    grow,
    rebuild,
)
from benchmarks.indexing import _url, real_fingerprints_per_s, recreate_database
from benchmarks.service_process import ROOT, running_service
from service.audio.decode import decode_audio
from service.audio.hashes import landmark_hashes
from service.audio.params import DEFAULT_PARAMS
from service.audio.peaks import find_peaks_and_sustained, thin_peaks
from service.core.identify.lookups import HitCache, first_tier_budget, postings_caps
from service.core.index import resolve_meta
from service.match import (
    MatchParams,
    QueryVariant,
    find_matches,
    inconclusive,
    speed_search_needed,
    speed_variants,
    variant_of,
)
from service.memory import keep_freed_memory
from service.settings import Settings
from service.store import Hits
from service.store.postgres import LOOKUP_SQL, PostgresStore, lookup_limits
from service.store.postings import decode_lookup

FAST_CONDITIONS = ("mp3_64k", "clean")
SPEED_CONDITIONS = ("speed_m5", "white_snrm5")
#: The report's rows: each kind of clip, what it is, and the condition it is made of when one
#: condition names it (known and unknown clips share their conditions).
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
SECTION = "## Identify latency against catalogue size (`benchmarks/latency.py`)"
STAGES = ("decode", "fingerprint", "lookup_sql", "hit_decode", "voting", "speed_variants")
#: Timed beside the stages, not part of them: the reference matcher on the same hits.
REFERENCE = "voting_reference"


@dataclass(frozen=True)
class Clip:
    path: Path
    condition: str
    track_id: str
    #: The title its track is indexed under by `index_real_tracks`; "" for unindexed tracks.
    title: str = ""
    #: The report row it belongs to: "known", "unknown", "speed" or "noisy" (KINDS).
    kind: str = "known"


def dev_clips(
    conditions: tuple[str, ...], per_condition: int, seed: int, indexed: bool = True
) -> list[Clip]:
    """10-s clips from the development query set, `per_condition` each: of indexed tracks, or
    with `indexed=False` of the unindexed ones (the "unknown" kind)."""
    root = corpus_dir() / "queries" / "dev"
    flag = "1" if indexed else "0"
    with (root / "queries.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["indexed"] == flag and r["clip_len_s"] == "10"]
    with (root / "index_tracks.csv").open() as f:
        paths = {r["track_id"]: r["path"] for r in csv.DictReader(f)}
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
    return resolve_meta(None, tags, str(_indexed_name(corpus_path))).title


def _indexed_name(corpus_path: str) -> Path:
    """The file name a corpus track is indexed under (its path, flattened)."""
    return Path(corpus_path.replace("/", "_"))


# --- the catalogue ----------------------------------------------------------------------------


def index_real_tracks(url: str, workers: int) -> float:
    """Index the corpus's indexed tracks with `song-detection index` (symlinks); seconds."""
    root = corpus_dir()
    folder = Path(tempfile.mkdtemp(prefix="sd_latency_real_"))
    with (root / "queries" / "dev" / "index_tracks.csv").open() as f:
        for r in csv.DictReader(f):
            (folder / _indexed_name(r["path"])).symlink_to(root / r["path"])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "DB_"))}
    env["DATABASE_URL"] = url
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "service.cli", "index", str(folder), "--workers", str(workers)],
        check=True, env=env, cwd=ROOT,
    )  # fmt: skip
    return time.perf_counter() - started


# --- 1. through HTTP --------------------------------------------------------------------------


async def http_latency(
    base: str, clips: list[Clip], warm: int = 3, repeat: int = 0
) -> list[dict[str, object]]:
    """One request at a time; per clip: kind, condition, server and client ms, whether the
    top match is a real song and the right answer (for an unknown clip: no match), and the
    matches themselves (song id and what the API says of the match)."""
    samples = []
    queries = corpus_dir() / "queries" / "dev"
    async with httpx.AsyncClient(base_url=base, timeout=600) as client:
        for i, clip in enumerate([*clips[:warm], *clips]):
            data = clip.path.read_bytes()
            started = time.perf_counter()
            response = await client.post("/identify", files={"file": (clip.path.name, data)})
            client_ms = (time.perf_counter() - started) * 1000
            response.raise_for_status()
            body = response.json()
            if i < warm:
                continue
            top = body["matches"][0]["song"] if body["matches"] else None
            right = (
                top is None if clip.kind == "unknown" else bool(top and top["title"] == clip.title)
            )
            samples.append(
                {
                    "condition": clip.condition,
                    "kind": clip.kind,
                    "clip": str(clip.path.relative_to(queries)),
                    "track_id": clip.track_id,
                    "repeat": repeat,
                    "server_ms": body["elapsed_ms"],
                    "client_ms": client_ms,
                    "real_top": bool(top and not top["title"].startswith("synthetic ")),
                    "right_top": right,
                    "matches": [
                        {"song_id": m["song"]["id"], **{f: m[f] for f in MATCH_FIELDS}}
                        for m in body["matches"]
                    ],
                }
            )
    return samples


#: What an answer says of each match beside its song (the API's MatchOut fields).
MATCH_FIELDS = (
    "song_offset_s", "confidence", "score", "speed", "evidence", "query_start_s", "query_end_s"
)  # fmt: skip


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
    with (root / "queries" / "dev" / "index_tracks.csv").open() as f:
        tracks = [(r["track_id"], str(root / r["path"])) for r in csv.DictReader(f)]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        return dict(pool.map(_track_digest, tracks))


def answer_rows(results: dict[str, dict], tracks: dict[str, str]) -> list[dict[str, object]]:
    """One row per request of every size in `results` that recorded its matches."""
    rows = []
    unmapped: set[str] = set()
    for r in results.values():
        songs = int(r["size"]["songs"])
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
            rows.append(
                {
                    "key": [songs, s["kind"], s["condition"], s["clip"], s["repeat"]],
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


# --- 2. in process, per stage -----------------------------------------------------------------


async def _timed_lookup(
    store: PostgresStore,
    hashes: np.ndarray,
    t: dict[str, float],
    max_postings: int | None,
    max_hits: int | None,
) -> Hits:
    wanted = np.unique(np.asarray(hashes, dtype=np.int32))
    if len(wanted) == 0:
        return Hits.empty()
    async with store._connection() as conn:
        started = time.perf_counter()
        row = await conn.fetchrow(
            LOOKUP_SQL, wanted.tolist(), *lookup_limits(max_postings, max_hits)
        )
        fetched = time.perf_counter()
        found, song_ids, frames = decode_lookup(
            row["heads"], row["body"], row["delta"], row["tombstones"]
        )
        hits = store._song_frames.hits(found, song_ids, frames)
        decoded = time.perf_counter()
    t["lookup_sql"] += (fetched - started) * 1000
    t["hit_decode"] += (decoded - fetched) * 1000
    t["hits"] += len(found)
    t["lookup_bytes"] += len(row["body"])
    return hits


def _reference_variant(v: QueryVariant, ordered: np.ndarray) -> reference_matching.QueryVariant:
    """`v` for the reference matcher, which has no per-variant cap: the same pairs come from
    leaving the variant's hashes above its cap out of it (`ordered`: the hits' hashes, sorted)."""
    # The stage profile builds speed variants of the whole clip only: never pitch-only ones,
    # never ones that start into the clip.
    assert not v.pitch_only and v.start_s == 0.0
    fields = {
        k: x for k, x in vars(v).items() if k not in ("max_postings", "pitch_only", "start_s")
    }
    if v.max_postings is not None:
        counts = np.searchsorted(ordered, v.hashes, "right") - np.searchsorted(ordered, v.hashes)
        kept = counts <= v.max_postings
        for k in ("hashes", "offsets", "query_frames"):
            fields[k] = fields[k][kept]
    return reference_matching.QueryVariant(**fields)


class _TimedStore:
    """Just enough of a Store for HitCache, timing each lookup into `t`."""

    def __init__(self, store: PostgresStore, t: dict[str, float]) -> None:
        self._store, self._t = store, t

    async def lookup(
        self, hashes: np.ndarray, max_postings: int | None = None, max_hits: int | None = None
    ) -> Hits:
        return await _timed_lookup(self._store, hashes, self._t, max_postings, max_hits)


async def stage_profile(url: str, clips: list[Clip]) -> list[dict[str, float]]:
    """service.core.identify's identify (tiers, HitCache) with a timer per stage, per clip."""
    keep_freed_memory()  # as the service does (service/memory.py)
    settings = Settings(database_url=url)
    match_params = MatchParams(
        min_confidence=settings.min_confidence, max_matches=settings.max_matches
    )
    params = DEFAULT_PARAMS
    query_params = params.for_queries()
    store = PostgresStore(url, params.version, pool_min_size=1, pool_max_size=1)
    await store.open()
    rows = []
    try:
        # Warm the connection and the prepared statement (open() has read the song lengths).
        await store.lookup(np.arange(0, 1 << 23, 1024, dtype=np.int32))
        caps = await postings_caps(store, match_params)
        for clip in clips:
            t = dict.fromkeys((*STAGES, REFERENCE, "hits", "lookup_bytes", "tiers"), 0.0)
            t["reference_differs"] = 0.0
            started = time.perf_counter()
            audio = decode_audio(clip.path, query_params.sample_rate_hz)
            decoded = time.perf_counter()
            # As analysis.analyse_query: the second tier's peaks are picked up front.
            peaks, sustained = find_peaks_and_sustained(audio.samples, query_params)
            dense = landmark_hashes(sustained, query_params)
            sparse = landmark_hashes(thin_peaks(peaks, params), params)
            t["decode"] = (decoded - started) * 1000
            t["fingerprint"] = (time.perf_counter() - decoded) * 1000
            cache = HitCache(
                _TimedStore(store, t),  # type: ignore[arg-type]
                match_params.max_hits_per_lookup,
            )

            async def match(
                variants: list,
                t: dict[str, float] = t,
                cache=cache,
                cap=caps.deep,
                budget: int | None = None,
            ) -> list:
                hits = await cache.hits_for(
                    np.concatenate([v.hashes for v in variants]), cap, budget
                )

                ordered = np.sort(hits.hashes)
                reference_variants = [_reference_variant(v, ordered) for v in variants]

                def current() -> list:
                    return find_matches(variants, hits, params, match_params)

                def previous() -> list:
                    return reference_matching.find_matches(
                        reference_variants,
                        reference_matching.Hits(**vars(hits)),
                        params,
                        reference_matching.MatchParams(
                            **{
                                f.name: getattr(match_params, f.name)
                                for f in dataclasses.fields(reference_matching.MatchParams)
                            }
                        ),
                    )

                # Alternate which matcher runs first: on millions of hits the first pays
                # for fresh memory the second may find mapped already.
                runs = [("voting", current), (REFERENCE, previous)]
                for stage, run in runs if len(rows) % 2 == 0 else runs[::-1]:
                    voting = time.perf_counter()
                    result = run()
                    t[stage] += (time.perf_counter() - voting) * 1000
                    if stage == "voting":
                        found = result
                    else:
                        reference = result
                # On the reference's fields: the current Match has more (grid_speed).
                if len(reference) != len(found) or any(
                    vars(m) != {k: vars(f)[k] for k in vars(m)}
                    for m, f in zip(reference, found, strict=True)
                ):
                    t["reference_differs"] += 1
                t["tiers"] += 1
                return found

            budget = first_tier_budget(match_params, audio.duration_s)
            matches = await match([variant_of(sparse)], cap=caps.first, budget=budget)
            if inconclusive(matches, match_params):
                matches = await match([variant_of(dense)])
            if speed_search_needed(matches, match_params):
                started = time.perf_counter()
                variants = speed_variants(
                    peaks, match_params.speed_grid(), query_params, caps.speed
                )
                t["speed_variants"] = (time.perf_counter() - started) * 1000
                await match(variants, cap=caps.speed)
            # Side by side: the first tier again without the frequent-hash cap (lookup SQL,
            # hit decoding and voting), and whether its answer is the same song.
            started = time.perf_counter()
            raw = await store.lookup(sparse.hashes)
            found_raw = find_matches([variant_of(sparse)], raw, params, match_params)
            t["uncapped_ms"] = (time.perf_counter() - started) * 1000
            t["uncapped_hits"] = float(len(raw))
            # With the cap, and with the cap and the first tier's budget: alternately first
            # and second, as the second finds memory and pages the first has just touched.
            found: dict[str, list] = {}
            for kind, budget_of_kind in (("capped", None), ("budget", budget))[
                :: 1 if len(rows) % 2 == 0 else -1
            ]:
                started = time.perf_counter()
                hits = await store.lookup(sparse.hashes, caps.first, budget_of_kind)
                found[kind] = find_matches([variant_of(sparse)], hits, params, match_params)
                t[f"{kind}_ms"] = (time.perf_counter() - started) * 1000
                t[f"{kind}_hits"] = float(len(hits))
            found_capped, found_budgeted = found["capped"], found["budget"]
            t["alternated"] = 1.0
            top = [f[0].song_id if f else None for f in (found_raw, found_capped, found_budgeted)]
            t["cap_same_top"] = float(top[0] == top[1])
            t["budget_same_top"] = float(top[2] == top[1])
            t["budget_settles"] = float(not inconclusive(found_budgeted, match_params))
            t["condition"] = clip.condition  # type: ignore[assignment]
            rows.append(t)
    finally:
        await store.close()
    return rows


# --- one catalogue size -----------------------------------------------------------------------


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


async def measure_size(url: str, args: argparse.Namespace) -> dict[str, object]:
    fast = dev_clips(FAST_CONDITIONS, args.clips, seed=1)
    slow = dev_clips(SPEED_CONDITIONS, args.speed_clips, seed=2)
    unknown = dev_clips(FAST_CONDITIONS, args.unknown_clips, seed=3, indexed=False)
    size = await catalogue_size(url)
    size.update(await prewarm(url))
    size["cap"] = float(MatchParams().max_postings(int(size["fingerprints"])) or 0)
    with running_service(url, cpu_workers=args.cpu_workers) as base:
        samples = []
        for repeat in range(args.repeats):
            samples += await http_latency(base, fast, repeat=repeat)
        # The speed search reads ~20x the hits of an own-speed lookup: a few clips, once.
        samples += await http_latency(base, slow, warm=0)
        # Unknown music goes through every tier and the whole speed grid: a few clips, once.
        samples += await http_latency(base, unknown, warm=0)
    await add_song_digests(url, samples)
    profiled = fast[:: max(1, len(fast) // 6)] + slow[:2] + unknown[:: max(1, len(unknown) // 2)]
    profile = await stage_profile(url, profiled)
    return {"size": size, "samples": samples, "profile": profile}


# --- report -----------------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _buffers_gb(sizes: list[dict]) -> str:
    found = {r["size"].get("shared_buffers_bytes") for r in sizes} - {None}
    return " / ".join(f"{b / 2**30:.1f} GiB" for b in sorted(found)) or "(not recorded)"


def report(results: dict[str, dict]) -> list[str]:
    sizes = sorted(results.values(), key=lambda r: r["size"]["songs"])
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f} when the report was written, PostgreSQL on the same host; "
        f"Python {platform.python_version()}. Service: `song-detection serve`, one uvicorn "
        "process, `CPU_WORKERS=1`, requests one at a time. PostgreSQL "
        f"shared_buffers {_buffers_gb(sizes)}; before each size the postings table and its "
        "index are loaded into it with `pg_prewarm` (a lookup touches pages all over the "
        "table: a production database keeps it in memory). Measured "
        f"{time.strftime('%Y-%m-%d')}.",
        "",
        "**`POST /identify` latency against catalogue size** (10-s clips of the indexed "
        "corpus tracks, and unknown clips of its unindexed tracks, music the catalogue lacks; "
        "the catalogue is the indexed tracks plus synthetic 4-min songs with as many "
        "fingerprints per second as they store; server = the response's `elapsed_ms`, decode "
        "to answer; client = upload to parsed response; for unknown clips the right answer is "
        "no match):",
        "",
        "| songs | clips | n | server p50 ms | server p95 ms | client p50 ms | client p95 ms "
        "| top match is a real song | top match is the right song |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sizes:
        for kind, label in KINDS:
            s = [x for x in r["samples"] if kind_of(x) == kind]
            if not s:
                continue
            server = [x["server_ms"] for x in s]
            client = [x["client_ms"] for x in s]
            real = sum(x["real_top"] for x in s) / max(1, len(s))
            right = (
                f"{sum(x['right_top'] for x in s) / max(1, len(s)):.0%}"
                if all("right_top" in x for x in s)
                else "-"
            )
            lines.append(
                f"| {r['size']['songs']:,.0f} | {label} | {len(s)} | {_pct(server, 50):,.0f} | "
                f"{_pct(server, 95):,.0f} | {_pct(client, 50):,.0f} | {_pct(client, 95):,.0f} "
                f"| {real:.0%} | {right} |"
            )
    lines += [
        "",
        "**Where the server-side milliseconds go** (the same pipeline in one process, a timer "
        "per stage, mean ms per clip, grouped by the tiers a clip needed: 1 = index-density "
        "landmarks, 2 = the denser query landmarks, 3 = the speed grid; each tier looks up only "
        "hashes not fetched yet, and its lookup and voting add to the columns):",
        "",
        "| songs | tiers | n | decode | fingerprint | lookup SQL | hit decode | voting "
        "| speed variants | hits | lookup MB | voting, reference matcher | speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sizes:
        for label, tiers in (("tier 1", 1), ("tiers 1-2", 2), ("tiers 1-3 (speed grid)", 3)):
            rows = [p for p in r["profile"] if p["tiers"] == tiers]
            if not rows:
                continue
            keys = (*STAGES, "hits", REFERENCE)
            mean = {k: float(np.mean([p.get(k, np.nan) for p in rows])) for k in keys}
            mb = float(np.mean([p["lookup_bytes"] for p in rows])) / 1e6
            lines.append(
                f"| {r['size']['songs']:,.0f} | {label} | {len(rows)} | "
                + " | ".join(f"{mean[k]:,.1f}" for k in STAGES)
                + f" | {mean['hits']:,.0f} | {mb:.1f} | {mean[REFERENCE]:,.1f} | "
                f"{mean[REFERENCE] / mean['voting']:.1f}x |"
            )
    lines += [
        "",
        "**The frequent-hash cap and the first tier's budget, side by side** (each profiled "
        "clip's first tier, its index-density landmarks, looked up and voted on three times in "
        "a row: without the cap, with it, and with the cap and "
        "`MatchParams.max_hits_first_tier`, the rarest hashes first; lookup SQL + hit decoding "
        "+ voting, mean ms; the capped and budgeted runs alternate which goes first; "
        "'same top' compares with the capped answer, 'settled' counts the clips the budgeted "
        "tier answers without going on to the second):",
        "",
        "| songs | cap (postings) | clips | hits without | hits with | hits budgeted "
        "| ms without | ms with | ms budgeted | same top song (cap) | same top (budget) "
        "| settled (budget) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sizes:
        rows = [p for p in r["profile"] if "uncapped_ms" in p]
        if not rows:
            continue
        keys = ("uncapped_hits", "capped_hits", "budget_hits", "uncapped_ms", "capped_ms")
        mean = {k: float(np.mean([p.get(k, np.nan) for p in rows])) for k in (*keys, "budget_ms")}
        same = sum(p["cap_same_top"] for p in rows)
        extra = [
            f"{sum(p[k] for p in rows):.0f}/{len(rows)}" if all(k in p for p in rows) else "-"
            for k in ("budget_same_top", "budget_settles")
        ]
        lines.append(
            f"| {r['size']['songs']:,.0f} | {r['size'].get('cap', float('nan')):,.0f} | "
            f"{len(rows)} | {mean['uncapped_hits']:,.0f} | {mean['capped_hits']:,.0f} | "
            f"{mean['budget_hits']:,.0f} | {mean['uncapped_ms']:,.1f} | "
            f"{mean['capped_ms']:,.1f} | {mean['budget_ms']:,.1f} | "
            f"{same:.0f}/{len(rows)} | {extra[0]} | {extra[1]} |"
        )
    late = [
        f"{r['size']['songs']:,.0f}"
        for r in sizes
        if any("budget_ms" in p and "alternated" not in p for p in r["profile"])
    ]
    if late:
        lines += [
            "",
            f"At {', '.join(late)} songs the budgeted run always went last (measured before "
            "the runs alternated), so its ms there are low: compare the hits.",
        ]
    differ = sum(p.get("reference_differs", 0) for r in sizes for p in r["profile"])
    lines += [
        "",
        f"The reference matcher (`benchmarks/reference_matching.py`, a plain matcher counting "
        f"votes per query frame as the service's does) ran on the same "
        f"hits as the service's (alternately first and second); its "
        f"matches differed on "
        f"{differ:.0f} of the profiled clips.",
    ]
    lines += [
        "",
        "**PostgreSQL bytes per hour of audio** (`pg_total_relation_size` of `fp_postings`, "
        "the delta and tombstones, after `VACUUM`; `songs` separately):",
        "",
        "| songs | hours | fingerprints | index MB | MB per hour | bytes per fingerprint "
        "| `songs` MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sizes:
        z = r["size"]
        lines.append(
            f"| {z['songs']:,.0f} | {z['hours']:,.0f} | {z['fingerprints']:,.0f} | "
            f"{z['index_bytes'] / 1e6:,.0f} | {z['index_bytes'] / 1e6 / z['hours']:.1f} | "
            f"{z['index_bytes'] / z['fingerprints']:.1f} | {z['songs_bytes'] / 1e6:.1f} |"
        )
    return lines


async def run(args: argparse.Namespace) -> dict[str, dict]:
    results_path = Path(args.results)
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    url = _url(args.admin_dsn, args.database)
    if args.index_real:
        url = await recreate_database(args.admin_dsn, args.database)
        seconds = index_real_tracks(url, args.workers)
        print(f"indexed the real tracks in {seconds:.0f} s", file=sys.stderr)
    p = None
    for songs in args.sizes:
        if str(songs) in results and not args.again:
            continue
        if p is None:
            p = await _distribution(url, Path(args.results).with_suffix(".p.npy"))
        if args.as_is and (await catalogue_size(url))["songs"] == songs:
            # Measured again on the catalogue as it stands: rewriting 100,000 songs' postings
            # takes longer than measuring them, and a size is best measured on a quiet machine.
            load = results.get(str(songs), {}).get("load", {"how": "as is"})
        else:
            print(f"growing to {songs} songs", file=sys.stderr, flush=True)
            # Rewriting every step is robust to an interrupted earlier step (songs inserted,
            # postings not) and cheaper than merging a step that more than doubles the
            # catalogue.
            step = grow if args.merge else rebuild
            fps_per_s = await real_fingerprints_per_s(url)
            added, load_s = await step(url, songs, p, seed=songs, fps_per_s=fps_per_s)
            print(
                f"   {added:,} postings in {load_s:.0f} s ({fps_per_s:.1f} fingerprints per "
                "second of synthetic song, as the real songs store)",
                file=sys.stderr,
                flush=True,
            )
            load = {
                "postings": added,
                "seconds": load_s,
                "how": step.__name__,
                "fps_per_s": fps_per_s,
            }
        measured = await measure_size(url, args)
        if measured["size"]["songs"] != songs:
            raise RuntimeError(f"the catalogue holds {measured['size']['songs']:.0f} songs")
        results[str(songs)] = measured
        results[str(songs)]["load"] = load
        results_path.write_text(json.dumps(results))
        print("\n".join(report({str(songs): results[str(songs)]})), file=sys.stderr, flush=True)
    return results


async def _distribution(url: str, cache: Path) -> np.ndarray:
    """The real songs' hash distribution, kept on disk: later steps no longer have it alone."""
    if cache.exists():
        return np.load(cache)
    p = await catalogue_hash_distribution(url)
    np.save(cache, p)
    return p


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--database", default="sd_latency_cat")
    parser.add_argument("--index-real", action="store_true", help="(re)create and index")
    parser.add_argument("--workers", type=int, default=2, help="for --index-real")
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
        "--merge", action="store_true", help="merge each step into the postings (see grow)"
    )
    parser.add_argument(
        "--as-is",
        action="store_true",
        help="with --again: measure a size the catalogue already holds without rebuilding it",
    )
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    parser.add_argument("--answers", help="write every request's matches to this JSON-lines file")
    args = parser.parse_args()
    at_commit = commit()
    results = asyncio.run(run(args))
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

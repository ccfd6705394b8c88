"""Grow a PostgreSQL catalogue with synthetic songs, step by step, in the postings layout.

The latency curve (1k -> 10k -> 30k -> 100k songs) is measured on one database that grows
between measurements, so each step loads only the songs it adds. Real songs indexed through
the service come first; synthetic songs are appended with their own id range and their
postings are merged into the existing rows exactly as compaction merges (`postings ||
excluded.postings`), so the table ends up as the service itself would leave it. A synthetic
song carries as many fingerprints per second as the real songs store on average
(`real_fingerprints_per_s`), so N songs hold the postings N real songs would. Under the "fp2"
index format those are landmarks and triplets in the real songs' proportions
(benchmarks/hash_space.py).
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

import asyncpg
import numpy as np

from benchmarks.hash_space import (
    LANDMARK_SPACE,
    hash_position,
    held_out,
    position_hash,
    stored_distribution,
)
from benchmarks.indexing import (
    SYNTHETIC_SONG_S,
    postings_copy,
    rows_copy,
    vacuum,
)
from service.audio.params import DEFAULT_PARAMS
from service.audio.triplets import TRIPLET_HASH_SPACE, TRIPLET_TAG
from service.store.postings import decode_lookup, encode_postings

#: Postings per COPY + merge transaction: bounds client memory (~30 bytes per posting while
#: building the COPY payload) and the size of one transaction's WAL.
CHUNK_POSTINGS = 8_000_000
FINGERPRINT_TABLES = ("fp_postings", "fingerprints", "fp_tombstones")
#: Hash values per query when reading the real songs' postings back at 10k songs (~70 MB);
#: fewer in proportion at larger catalogues (one bytea holds at most 1 GB).
REAL_SCAN_HASHES = 250_000


async def catalogue_hash_distribution(url: str) -> np.ndarray:
    """p over hash positions (benchmarks/hash_space.py) from the fingerprints the
    catalogue's real (non-synthetic) songs stored, landmarks and triplets alike, leaving out
    the songs hash_space.held_out names (by the file each was indexed from)."""
    conn = await asyncpg.connect(url)
    try:
        synthetic = await conn.fetchval(
            "SELECT count(*) FROM songs WHERE content_sha256 LIKE 'synthetic-%'"
        )
        if synthetic:
            raise RuntimeError("the distribution must come from a catalogue of real songs only")
        songs = await conn.fetch("SELECT id, source FROM songs")
        if not songs or any(not r["source"] for r in songs):
            # A song without its source file cannot be told held out or not.
            raise RuntimeError("every real song must have been indexed from a source file")
        counted = np.array(
            [r["id"] for r in songs if not held_out(Path(r["source"]).name)], dtype=np.int64
        )
        if len(counted) in (0, len(songs)):
            raise RuntimeError("the real songs are not split: none or all of them are held out")
        hashes, song_ids, _ = await _real_postings(conn)
        delta = await conn.fetch(
            "SELECT hash FROM fingerprints WHERE song_id = ANY($1::int[])", counted.tolist()
        )
    finally:
        await conn.close()
    kept = hashes[np.isin(song_ids, counted)]
    delta_hashes = np.array([r["hash"] for r in delta], dtype=np.int64)
    return stored_distribution(np.concatenate([kept, delta_hashes]))


async def grow(
    url: str, target_songs: int, p: np.ndarray, seed: int, fps_per_s: float
) -> tuple[int, float]:
    """Add synthetic songs of `fps_per_s` fingerprints per second until the catalogue holds
    `target_songs`; (postings added, s).

    Merging into existing rows costs ~3x a plain COPY per posting: for steps that add more
    than the catalogue holds, `rebuild` is faster."""
    started = time.perf_counter()
    conn = await asyncpg.connect(url)
    try:
        have = int(await conn.fetchval("SELECT count(*) FROM songs"))
        add = target_songs - have
        if add <= 0:
            return 0, 0.0
        n_frames = int(SYNTHETIC_SONG_S / DEFAULT_PARAMS.frame_s)
        per_song = round(SYNTHETIC_SONG_S * fps_per_s)
        ids = await conn.fetch(
            "INSERT INTO songs (title, duration_s, n_frames, content_sha256, fingerprint_count)"
            " SELECT 'synthetic ' || i, $3, $4, 'synthetic-' || i, $5"
            " FROM generate_series($1::int, $2::int) i RETURNING id",
            have + 1,
            target_songs,
            SYNTHETIC_SONG_S,
            n_frames,
            per_song,
        )
        first_id, last_id = min(r["id"] for r in ids), max(r["id"] for r in ids)
        if last_id - first_id + 1 != add:
            raise RuntimeError("synthetic song ids are not contiguous")
        rng = np.random.default_rng(seed)
        counts = rng.poisson(p * add * per_song)
        await conn.execute(
            "CREATE UNLOGGED TABLE IF NOT EXISTS sd_growth_stage (hash int4, postings bytea)"
        )
        bounds = np.searchsorted(
            np.cumsum(counts), np.arange(CHUNK_POSTINGS, counts.sum(), CHUNK_POSTINGS)
        )
        edges = [0, *bounds.tolist(), len(counts)]
        for i, (lo, hi) in enumerate(itertools.pairwise(edges)):
            if hi <= lo:
                continue
            payload = postings_copy(
                position_hash(np.arange(lo, hi)), counts[lo:hi], add, rng, first_id
            )
            async with conn.transaction():
                await conn.execute("TRUNCATE sd_growth_stage")
                await conn.copy_to_table(
                    "sd_growth_stage", source=memoryview(payload),
                    columns=["hash", "postings"], format="binary",
                )  # fmt: skip
                await conn.execute(
                    "INSERT INTO fp_postings AS p (hash, postings)"
                    " SELECT hash, postings FROM sd_growth_stage"
                    " ON CONFLICT (hash) DO UPDATE SET postings = p.postings || excluded.postings"
                )
            print(f"   chunk {i + 1}/{len(edges) - 1}", file=sys.stderr, flush=True)
        await conn.execute("DROP TABLE sd_growth_stage")
    finally:
        await conn.close()
    await vacuum(url, "fp_postings", "songs")
    return int(counts.sum()), time.perf_counter() - started


async def catalogue_size(url: str) -> dict[str, float]:
    """Songs, hours of audio and bytes (fingerprint tables, and songs) of the catalogue."""
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) AS songs, coalesce(sum(duration_s), 0) / 3600 AS hours,"
            " coalesce(sum(fingerprint_count), 0) AS fingerprints,"
            " (SELECT sum(pg_total_relation_size(t::regclass))"
            "    FROM unnest($1::text[]) t) AS index_bytes,"
            " pg_total_relation_size('songs') AS songs_bytes FROM songs",
            list(FINGERPRINT_TABLES),
        )
    finally:
        await conn.close()
    return {k: float(v) for k, v in row.items()}


async def _real_postings(conn: asyncpg.Connection) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hash, song_id, frame) of every posting of a real song, in hash order.

    Read in hash ranges: one bytea holds at most 1 GB, a 10k-song catalogue 2.7 GB of postings.
    """
    real = await conn.fetch("SELECT id FROM songs WHERE content_sha256 NOT LIKE 'synthetic-%'")
    real_ids = np.array([r["id"] for r in real], dtype=np.int64)
    songs = int(await conn.fetchval("SELECT count(*) FROM songs"))
    step = max(1024, REAL_SCAN_HASHES * 10_000 // max(songs, 10_000))
    # Landmarks' values, then triplets' (index format "fp2"), skipping the empty values
    # between them.
    spans = (
        range(0, LANDMARK_SPACE, step),
        range(TRIPLET_TAG, TRIPLET_TAG + TRIPLET_HASH_SPACE, step),
    )
    parts = []
    for lo in (lo for span in spans for lo in span):
        row = await conn.fetchrow(
            "SELECT coalesce(string_agg(int4send(hash) || int4send(length(postings)), ''::bytea"
            " ORDER BY hash), ''::bytea) AS heads,"
            " coalesce(string_agg(postings, ''::bytea ORDER BY hash), ''::bytea) AS body"
            " FROM fp_postings WHERE hash >= $1 AND hash < $2",
            lo,
            lo + step,
        )
        hashes, song_ids, frames = decode_lookup(row["heads"], row["body"], b"", b"")
        keep = np.isin(song_ids, real_ids)
        parts.append((hashes[keep], song_ids[keep], frames[keep]))
    if not parts:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty.copy(), empty.copy()
    hashes, song_ids, frames = (np.concatenate(column) for column in zip(*parts, strict=True))
    return hashes, song_ids, frames


async def rebuild(
    url: str, target_songs: int, p: np.ndarray, seed: int, fps_per_s: float
) -> tuple[int, float]:
    """Rewrite fp_postings for `target_songs` (more or fewer than now): the real songs'
    postings kept, every synthetic song's postings (`fps_per_s` per second of song) drawn
    afresh, one plain COPY; (postings written, s)."""
    started = time.perf_counter()
    conn = await asyncpg.connect(url)
    try:
        if await conn.fetchval("SELECT count(*) FROM fingerprints"):
            raise RuntimeError("compact the delta first")
        have = int(await conn.fetchval("SELECT count(*) FROM songs"))
        n_frames = int(SYNTHETIC_SONG_S / DEFAULT_PARAMS.frame_s)
        per_song = round(SYNTHETIC_SONG_S * fps_per_s)
        # Read before anything changes: the songs and the postings are rewritten in one
        # transaction, so a step that fails leaves the catalogue as it was.
        real_h, real_s, real_f = await _real_postings(conn)
        print(f"   {len(real_h):,} real postings kept", file=sys.stderr, flush=True)
        # Positions in p (sorted as the hashes are).
        real_h = hash_position(real_h)
        async with conn.transaction():
            if target_songs < have:
                # Shrink: drop the newest synthetic songs (to re-measure a smaller size).
                await conn.execute(
                    "DELETE FROM songs WHERE id IN (SELECT id FROM songs"
                    " WHERE content_sha256 LIKE 'synthetic-%' ORDER BY id DESC LIMIT $1)",
                    have - target_songs,
                )
            if target_songs > have:
                await conn.execute(
                    "INSERT INTO songs (title, duration_s, n_frames, content_sha256,"
                    " fingerprint_count) SELECT 'synthetic ' || i, $3, $4, 'synthetic-' || i, $5"
                    " FROM generate_series($1::int, $2::int) i",
                    have + 1, target_songs, SYNTHETIC_SONG_S, n_frames, per_song,
                )  # fmt: skip
            syn_ids = np.array(
                [
                    r["id"]
                    for r in await conn.fetch(
                        "SELECT id FROM songs WHERE content_sha256 LIKE 'synthetic-%' ORDER BY id"
                    )
                ],
                dtype=np.int64,
            )
            rng = np.random.default_rng(seed)
            counts = rng.poisson(p * len(syn_ids) * per_song)
            real_counts = np.bincount(real_h, minlength=len(counts))
            bounds = np.searchsorted(
                np.cumsum(counts + real_counts),
                np.arange(CHUNK_POSTINGS, (counts + real_counts).sum(), CHUNK_POSTINGS),
            )
            edges = [0, *bounds.tolist(), len(counts)]
            await conn.execute("TRUNCATE fp_postings")
            for i, (lo, hi) in enumerate(itertools.pairwise(edges)):
                if hi <= lo:
                    continue
                n = int(counts[lo:hi].sum())
                r_lo, r_hi = np.searchsorted(real_h, [lo, hi])
                hashes = np.concatenate(
                    [np.repeat(np.arange(lo, hi), counts[lo:hi]), real_h[r_lo:r_hi]]
                )
                song_ids = np.concatenate(
                    [syn_ids[rng.integers(0, len(syn_ids), n)], real_s[r_lo:r_hi]]
                )
                frames = np.concatenate([rng.integers(0, n_frames, n), real_f[r_lo:r_hi]])
                order = np.argsort(hashes, kind="stable")
                payload = rows_copy(
                    position_hash(np.arange(lo, hi)),
                    np.bincount(hashes - lo, minlength=hi - lo),
                    encode_postings(song_ids[order], frames[order]),
                )
                await conn.copy_to_table(
                    "fp_postings", source=memoryview(payload),
                    columns=["hash", "postings"], format="binary",
                )  # fmt: skip
                print(f"   chunk {i + 1}/{len(edges) - 1}", file=sys.stderr, flush=True)
    finally:
        await conn.close()
    await vacuum(url, "fp_postings", "songs")
    return int(counts.sum() + len(real_h)), time.perf_counter() - started

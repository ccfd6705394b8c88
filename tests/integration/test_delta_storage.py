"""What an emptied delta costs on disk after a bulk index (PostgreSQL).

A bulk load passes every fingerprint through the delta (`fingerprints`, one row each, a
b-tree on hash); compaction moves them out, and VACUUM frees the rows and index entries but
keeps the b-tree's pages. `optimize()`, which ends every bulk index, must leave the delta's
indexes the size of what it still holds, and lookups unchanged.
"""

from __future__ import annotations

import asyncio

import asyncpg
import numpy as np

from tests.integration.test_store import VERSION, make_fingerprints, make_song, opened

PAGE_BYTES = 8192


async def _sizes(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT c.relname, pg_relation_size(c.oid) AS bytes FROM pg_class c"
            " WHERE c.relname IN ('fingerprints', 'fingerprints_hash_idx',"
            " 'fingerprints_song_id_brin', 'fp_postings')"
        )
        return {r["relname"]: int(r["bytes"]) for r in rows}
    finally:
        await conn.close()


async def _vacuum(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("VACUUM fingerprints")
    finally:
        await conn.close()


def _rows(hits) -> list[tuple[int, int, int]]:
    return sorted(
        zip(hits.hashes.tolist(), hits.song_ids.tolist(), hits.offsets.tolist(), strict=True)
    )


async def test_optimize_shrinks_the_emptied_delta_after_a_bulk_index(pg_url: str) -> None:
    rng = np.random.default_rng(23)
    songs = [make_fingerprints(rng, 10_000, 0, (1 << 23) - 1) for _ in range(20)]
    async with opened(pg_url, VERSION, compact_delta_rows=0) as store:
        for i, fp in enumerate(songs):
            await store.add_song(make_song(fp, f"bulk-{i}"))
        loaded = await _sizes(pg_url)
        # 200,000 delta rows: a b-tree of a few MB.
        assert loaded["fingerprints_hash_idx"] > 2_000_000, loaded

        # Compaction and VACUUM alone (what leaves the space behind): rows gone, pages kept.
        await store.compact()
        await _vacuum(pg_url)
        vacuumed = await _sizes(pg_url)
        assert vacuumed["fingerprints"] == 0, vacuumed  # VACUUM truncates the empty heap
        assert vacuumed["fingerprints_hash_idx"] >= loaded["fingerprints_hash_idx"] // 2

        probe = np.concatenate([songs[3].hashes[:500], songs[17].hashes[:500]])
        before = await store.lookup(probe)
        await store.optimize()
        optimized = await _sizes(pg_url)
        # An empty b-tree is its metapage; an empty BRIN index three pages.
        assert optimized["fingerprints_hash_idx"] <= PAGE_BYTES, optimized
        assert optimized["fingerprints_song_id_brin"] <= 3 * PAGE_BYTES, optimized
        assert optimized["fingerprints"] == 0
        assert optimized["fp_postings"] == vacuumed["fp_postings"]
        assert _rows(await store.lookup(probe)) == _rows(before)
        assert {int(s) for s in before.song_ids} >= {4, 18}

        # The rebuilt indexes serve the next songs as before.
        fp = make_fingerprints(rng, 3000, 0, (1 << 23) - 1)
        song, _ = await store.add_song(make_song(fp, "after"))
        hits = await store.lookup(fp.hashes)
        assert np.count_nonzero(hits.song_ids == song.id) == len(np.unique(fp.hashes))


async def test_songs_added_during_optimize_stay_findable(pg_url: str) -> None:
    """The rebuild runs while adds and lookups go on: what they add lands in the delta (before
    or after the rebuild) and is found."""
    rng = np.random.default_rng(29)
    songs = [make_fingerprints(rng, 5000) for _ in range(10)]
    async with opened(pg_url, VERSION, compact_delta_rows=0) as store:
        ids = [
            (await store.add_song(make_song(fp, f"old-{i}")))[0].id
            for i, fp in enumerate(songs[:5])
        ]

        async def add_more() -> list[int]:
            added = []
            for i, fp in enumerate(songs[5:]):
                added.append((await store.add_song(make_song(fp, f"new-{i}")))[0].id)
                await store.lookup(songs[i].hashes[:200])
            return added

        _, added = await asyncio.gather(store.optimize(), add_more())
        for song_id, fp in zip([*ids, *added], songs, strict=True):
            hits = await store.lookup(fp.hashes)
            assert np.count_nonzero(hits.song_ids == song_id) == len(np.unique(fp.hashes))


async def test_compactions_keep_the_delta_index_from_growing(pg_url: str) -> None:
    """A service compacts every COMPACT_DELTA_ROWS fingerprints without a rebuild: each
    compaction must leave the delta's pages reusable, so that the b-tree stays the size of
    about two deltas instead of growing by one delta per compaction."""
    rng = np.random.default_rng(31)
    sizes = []
    async with opened(pg_url, VERSION, compact_delta_rows=0) as store:
        for cycle in range(5):
            for i in range(5):
                fp = make_fingerprints(rng, 10_000, 0, (1 << 23) - 1)
                await store.add_song(make_song(fp, f"cycle-{cycle}-{i}"))
            sizes.append((await _sizes(pg_url))["fingerprints_hash_idx"])
            await store.compact()
    # One delta of 50,000 rows is about 1.5 MB of b-tree; five would be 7.5 MB.
    assert sizes[-1] <= 1.2 * sizes[1], sizes

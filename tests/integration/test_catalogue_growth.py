"""The synthetic catalogues' hash distribution (benchmarks/catalogue_growth.py) read from a
real PostgreSQL catalogue: it counts the postings of the songs it does not hold out, and
none of a held-out song's, whose clips the large-catalogue benchmarks ask."""

from __future__ import annotations

import asyncio
import itertools

import asyncpg
import numpy as np
import pytest

from benchmarks.catalogue_growth import catalogue_hash_distribution
from benchmarks.hash_space import hash_position, held_out
from service.store.postings import encode_postings

#: A hash value each song holds alone, three times.
COUNTED_HASH, HELD_OUT_HASH = 1_000, 2_000


def _names() -> tuple[str, str]:
    """A file name the split counts and one it holds out."""
    names = (f"track_{i}.ogg" for i in itertools.count())
    counted = next(n for n in names if not held_out(n))
    kept_out = next(n for n in names if held_out(n))
    return counted, kept_out


async def _catalogue(url: str, sources: list[str | None], delta: bool = False) -> None:
    """Songs of these sources; the first two hold COUNTED_HASH and HELD_OUT_HASH, three
    postings each, in the postings table (or with `delta`, the held-out song's in the
    delta table, as an index not yet compacted leaves them)."""
    conn = await asyncpg.connect(url)
    try:
        ids = []
        for i, source in enumerate(sources):
            ids.append(
                await conn.fetchval(
                    "INSERT INTO songs (title, duration_s, n_frames, content_sha256, source)"
                    " VALUES ($1, 60, 1875, $2, $3) RETURNING id",
                    f"song {i}",
                    f"digest-{i}",
                    source,
                )
            )
        frames = np.array([10, 200, 900])
        for song_id, hash_value in zip(ids, (COUNTED_HASH, HELD_OUT_HASH), strict=False):
            if delta and hash_value == HELD_OUT_HASH:
                await conn.executemany(
                    "INSERT INTO fingerprints (hash, song_id, frame) VALUES ($1, $2, $3)",
                    [(hash_value, song_id, int(f)) for f in frames],
                )
                continue
            postings = encode_postings(np.full(3, song_id), frames)
            await conn.execute(
                "INSERT INTO fp_postings (hash, postings) VALUES ($1, $2)", hash_value, postings
            )
    finally:
        await conn.close()


@pytest.mark.parametrize("delta", [False, True], ids=["postings", "delta"])
def test_a_held_out_song_adds_nothing_to_the_distribution(pg_url: str, delta: bool) -> None:
    counted, kept_out = _names()
    asyncio.run(_catalogue(pg_url, [f"/music/{counted}", f"/music/{kept_out}"], delta))
    p = asyncio.run(catalogue_hash_distribution(pg_url))
    at = hash_position(np.array([COUNTED_HASH, HELD_OUT_HASH]))
    assert np.isclose(p.sum(), 1.0)
    # The counted song's value holds its own frequency; the held-out one's only what the
    # values never seen share (Good-Turing, spread by the marginals), far less.
    assert p[at[0]] > 0.5
    assert p[at[1]] < 1e-3 * p[at[0]]


def test_a_catalogue_that_is_not_split_is_refused(pg_url: str) -> None:
    counted, _ = _names()
    asyncio.run(_catalogue(pg_url, [f"/music/{counted}", f"/other/{counted}"]))
    with pytest.raises(RuntimeError, match="held out"):
        asyncio.run(catalogue_hash_distribution(pg_url))


def test_a_song_without_its_source_file_is_refused(pg_url: str) -> None:
    _, kept_out = _names()
    asyncio.run(_catalogue(pg_url, [None, f"/music/{kept_out}"]))
    with pytest.raises(RuntimeError, match="source file"):
        asyncio.run(catalogue_hash_distribution(pg_url))

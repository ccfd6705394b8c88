"""Fingerprint lookups in PostgreSQL: one statement, one round trip, a few byte strings, on the
read replica when one is configured (`_read_connection`).

A lookup reads the compacted postings (`fp_postings`) and the delta (`fingerprints`) of the
wanted hashes in one snapshot, leaves out whole the hashes over the caller's caps, and returns
the rows packed into byte strings that numpy decodes (service/store/postings.py) without a
Python object per row or posting, and the hashes its budget left out with their postings
(records.LeftOut).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import asyncpg
import numpy as np

from service.arrays import unique_values
from service.store.postgres.connection import PostgresBase
from service.store.postings import decode_lookup
from service.store.records import Hits, LeftOut

#: One statement, one snapshot: the postings rows of the wanted hashes (headers and bodies in
#: hash order), the delta rows, and the songs deleted since the last purge. The snapshot makes
#: a concurrent compaction invisible: a fingerprint is either still in the delta or already in
#: its postings, never both or neither.
LOOKUP_SQL = """
WITH p AS MATERIALIZED (
    SELECT hash, postings FROM fp_postings WHERE hash = ANY($1::int4[])
), d AS MATERIALIZED (
    SELECT hash, song_id, frame FROM fingerprints WHERE hash = ANY($1::int4[])
), counted AS MATERIALIZED (
    SELECT hash, sum(n) AS n FROM (
        SELECT hash, length(postings) / 6 AS n FROM p
        UNION ALL SELECT hash, count(*) FROM d GROUP BY hash
    ) c GROUP BY hash
), ranked AS MATERIALIZED (
    SELECT hash, n, sum(n) OVER (ORDER BY n, hash) AS running FROM counted
), frequent AS MATERIALIZED (
    SELECT hash FROM ranked WHERE n > $2::int8 OR running > $3::int8
), kept AS MATERIALIZED (
    SELECT hash, postings FROM p WHERE hash NOT IN (SELECT hash FROM frequent)
)
SELECT
    (SELECT coalesce(string_agg(int4send(hash) || int4send(length(postings)), ''::bytea
                                ORDER BY hash), ''::bytea) FROM kept) AS heads,
    (SELECT coalesce(string_agg(postings, ''::bytea ORDER BY hash), ''::bytea) FROM kept) AS body,
    (SELECT coalesce(string_agg(int4send(hash) || int4send(song_id) || int4send(frame),
                                ''::bytea), ''::bytea)
       FROM d WHERE hash NOT IN (SELECT hash FROM frequent)) AS delta,
    (SELECT coalesce(string_agg(int4send(song_id), ''::bytea), ''::bytea)
       FROM fp_tombstones) AS tombstones,
    (SELECT coalesce(string_agg(int4send(hash) || int8send(n::int8), ''::bytea ORDER BY hash),
                     ''::bytea)
       FROM ranked WHERE n <= $2::int8 AND running > $3::int8) AS left_out
"""

#: A hash the budget left out, and its postings, in the lookup's `left_out`.
_LEFT_OUT = np.dtype([("hash", ">i4"), ("postings", ">i8")])

#: max_postings or max_hits when the caller sets none.
_NO_CAP = 1 << 40


def lookup_limits(max_postings: int | None, max_hits: int | None) -> tuple[int, int]:
    """The lookup statement's $2 and $3."""
    return (
        _NO_CAP if max_postings is None else int(max_postings),
        _NO_CAP if max_hits is None else int(max_hits),
    )


class PostgresLookup(PostgresBase):
    """Lookups of the fingerprint index, and the song lengths and total they need."""

    async def lookup(
        self, hashes: np.ndarray, max_postings: int | None = None, max_hits: int | None = None
    ) -> Hits:
        wanted = unique_values(np.asarray(hashes, dtype=np.int32))
        if len(wanted) == 0:
            return Hits.empty()
        async with self._read_connection() as conn:
            # A prepared statement (asyncpg caches it per connection): one round trip. A hash
            # over the cap or past the budget (compacted postings, whose length is known
            # without reading them, plus uncompacted rows) is left out whole.
            row = await conn.fetchrow(
                LOOKUP_SQL, wanted.tolist(), *lookup_limits(max_postings, max_hits)
            )
            # Millions of hits at catalogue scale: decode them off the event loop, or health
            # checks and every other request wait behind it.
            found, song_ids, frames, missing = await asyncio.to_thread(
                self._decode_lookup, row["heads"], row["body"], row["delta"], row["tombstones"]
            )
            left_out = await self._left_out(conn, row["left_out"])
            if len(missing):
                # Only for songs this process has not met yet (new in another process, or
                # before its first lookups); a song deleted meanwhile stays unknown, and drops.
                known = await conn.fetch(
                    "SELECT id, n_frames FROM songs WHERE id = ANY($1::int4[])", missing.tolist()
                )
                self._song_frames.add(
                    np.array([r["id"] for r in known], dtype=np.int64),
                    np.array([r["n_frames"] for r in known], dtype=np.int64),
                )
        hits = await asyncio.to_thread(self._song_frames.hits, found, song_ids, frames)
        return replace(hits, left_out=left_out) if len(left_out) else hits

    async def _left_out(self, conn: asyncpg.Connection, packed: bytes) -> LeftOut:
        """The hashes a lookup's budget left out (int4 hash, int8 postings each), and the
        catalogue's frames: read at most once a minute, adjusted in between by this process's
        own adds and deletes. (Postings of deleted songs not purged yet count, as they do
        against the budget.)"""
        rows = np.frombuffer(packed, dtype=_LEFT_OUT)
        if not len(rows):
            return LeftOut.nothing()
        frames = self._catalogue_frames.fresh()
        if frames is None:
            frames = int(await conn.fetchval("SELECT coalesce(sum(n_frames), 0) FROM songs"))
            self._catalogue_frames.set(frames)
        return LeftOut(rows["hash"].astype(np.int64), rows["postings"].astype(np.int64), frames)

    def _decode_lookup(
        self, heads: bytes, body: bytes, delta: bytes, tombstones: bytes
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The lookup's hits and the ids among them whose song length is not cached yet."""
        found, song_ids, frames = decode_lookup(heads, body, delta, tombstones)
        return found, song_ids, frames, self._song_frames.missing(song_ids)

    async def fingerprint_total(self) -> int:
        total = self._fingerprint_total.fresh()
        if total is None:
            async with self._read_connection() as conn:
                total = int(
                    await conn.fetchval("SELECT coalesce(sum(fingerprint_count), 0) FROM songs")
                )
            self._fingerprint_total.set(total)
        return total

    async def _load_song_frames(self) -> None:
        """Every song's length, read once at start: the chance model needs the length of each
        song a lookup meets, and a new process would otherwise ask for them a few thousand
        at a time during its first identifications (15 ms each at 10,000 songs). Songs added
        later by other processes are still fetched when first met. 8 bytes per song. From the
        primary, which `open()` has just migrated: a replica may not have replayed that yet."""
        async with self._connection() as conn:
            rows = await conn.fetch("SELECT id, n_frames FROM songs")
        if rows:
            self._song_frames.add(
                np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)),
                np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows)),
            )

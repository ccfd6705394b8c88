"""Moving the delta into the packed postings, and purging deleted songs from them.

New songs' fingerprints are COPYed into `fingerprints`, a row each (the delta); `compact()`
moves them into `fp_postings`, one row per hash with its postings packed
(service/store/postings.py), in one transaction, and does so by itself in the background once
this process has added `compact_delta_rows`. A deleted song's compacted postings stay until a
purge removes them; meanwhile its tombstone makes lookups drop them.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from service.store.postgres.connection import PostgresBase
from service.store.postgres.schema import MIGRATION_LOCK_KEY
from service.store.postings import POSTING_BYTES
from service.store.records import CompactionResult

log = logging.getLogger(__name__)

#: pg_advisory_xact_lock key held by every transaction that rewrites fp_postings (compaction
#: and purge), so that replicas never compact at the same time.
COMPACTION_LOCK_KEY = MIGRATION_LOCK_KEY + 1

#: A posting packed in SQL exactly as service/store/postings.py packs it (low 3 bytes, BE).
_PACK_SQL = "substring(int4send({song}) from 2) || substring(int4send({frame}) from 2)"

#: Move every committed delta row into the postings, in one transaction. Rows COPYed by a
#: concurrent add_song after this statement's snapshot stay in the delta for the next run; a
#: row a concurrent delete_song removes first is skipped (and its song gets a tombstone).
_COMPACT_SQL = f"""
WITH moved AS (
    DELETE FROM fingerprints RETURNING hash, song_id, frame
), merged AS (
    INSERT INTO fp_postings AS p (hash, postings)
    SELECT hash, string_agg({_PACK_SQL.format(song="song_id", frame="frame")}, ''::bytea
                            ORDER BY song_id, frame)
    FROM moved GROUP BY hash
    ON CONFLICT (hash) DO UPDATE SET postings = p.postings || excluded.postings
    RETURNING 1
)
SELECT (SELECT count(*) FROM moved) AS fingerprints, (SELECT count(*) FROM merged) AS hashes
"""

#: Drop the postings of tombstoned songs ($1: their ids as 3-byte big-endian strings) from the
#: rows of one hash range. `position` finds candidate rows at memmem speed (a match at an
#: unaligned offset only costs a needless rewrite); the SET expression reads the row it
#: updates, so a posting appended concurrently is filtered too, never overwritten.
_PURGE_SQL = f"""
UPDATE fp_postings p SET postings = (
    SELECT coalesce(string_agg(substring(p.postings from i for {POSTING_BYTES}), ''::bytea
                               ORDER BY i), ''::bytea)
    FROM generate_series(1, length(p.postings), {POSTING_BYTES}) AS i
    WHERE NOT substring(p.postings from i for 3) = ANY($1::bytea[])
)
WHERE p.hash >= $2 AND p.hash <= $3
  AND EXISTS (SELECT 1 FROM unnest($1::bytea[]) AS t(song)
              WHERE position(t.song in p.postings) > 0)
"""

#: Postings rows rewritten per purge transaction.
_PURGE_BATCH_ROWS = 100_000


class PostgresCompaction(PostgresBase):
    """Compaction and purge of the fingerprint index, in the foreground or in the background."""

    async def compact(self, purge: bool = False, wait: bool = True) -> CompactionResult:
        """Move the delta into the postings; with `purge`, also drop the postings of deleted
        songs and their tombstones. `wait=False` gives up at once when another process is
        compacting (the background trigger uses it)."""
        async with self._maintenance_connection() as conn:
            async with conn.transaction():
                if wait:
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", COMPACTION_LOCK_KEY)
                elif not await conn.fetchval(
                    "SELECT pg_try_advisory_xact_lock($1)", COMPACTION_LOCK_KEY
                ):
                    return CompactionResult(skipped=True)
                self._delta_rows = 0
                moved = await conn.fetchrow(_COMPACT_SQL)
            if moved["fingerprints"]:
                # Makes the emptied b-tree pages of the delta reusable by the next delta:
                # without it each delta until autovacuum adds its own pages, and the index
                # grows by a delta's size per compaction. Outside the transaction (VACUUM
                # cannot run in one); it waits for no lock that adds or lookups hold.
                await conn.execute("VACUUM fingerprints")
            purged = await self._purge(conn) if purge else 0
        log.info(
            "compacted %d fingerprints into %d hashes; purged %d deleted songs",
            moved["fingerprints"],
            moved["hashes"],
            purged,
        )
        return CompactionResult(
            fingerprints=moved["fingerprints"], hashes=moved["hashes"], purged_songs=purged
        )

    async def _purge(self, conn: asyncpg.Connection) -> int:
        """Remove tombstoned songs from every postings row, a batch of rows per transaction,
        then their tombstones; returns how many songs were purged."""
        dead = [r["song_id"] for r in await conn.fetch("SELECT song_id FROM fp_tombstones")]
        if not dead:
            return 0
        patterns = [song_id.to_bytes(3, "big") for song_id in dead]
        low = -(2**31)
        while True:
            # Batch bounds from the primary key alone (an index-only walk).
            high = await conn.fetchval(
                "SELECT hash FROM fp_postings WHERE hash >= $1 ORDER BY hash OFFSET $2 LIMIT 1",
                low,
                _PURGE_BATCH_ROWS,
            )
            last = 2**31 - 1 if high is None else high - 1
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", COMPACTION_LOCK_KEY)
                await conn.execute(_PURGE_SQL, patterns, low, last)
                await conn.execute(
                    "DELETE FROM fp_postings WHERE hash >= $1 AND hash <= $2"
                    " AND length(postings) = 0",
                    low,
                    last,
                )
            if high is None:
                break
            low = high
        await conn.execute("DELETE FROM fp_tombstones WHERE song_id = ANY($1::int4[])", dead)
        return len(dead)

    def _maybe_compact_in_background(self) -> None:
        """Start one background compaction once this process has added enough to the delta.

        Lookups read the delta through a b-tree that grows with it, and the delta costs about
        six times the bytes of postings, so it is kept small without the caller waiting.
        """
        if not self._compact_delta_rows or self._delta_rows < self._compact_delta_rows:
            return
        if self._background is not None and not self._background.done():
            return
        self._background = asyncio.get_running_loop().create_task(self._compact_logged())

    async def _compact_logged(self) -> CompactionResult:
        try:
            return await self.compact(wait=False)
        except Exception:
            log.exception("background compaction failed; the delta stays for the next one")
            return CompactionResult(skipped=True)

    async def optimize(self) -> None:
        await self.compact(purge=True)
        # On a connection of its own without statement timeout, as compaction: a VACUUM of a
        # large catalogue takes longer than the pool's stall timeout allows a lookup.
        async with self._maintenance_connection() as conn:
            # VACUUM cannot run in a transaction block; asyncpg runs a lone statement outside.
            # It also reclaims the delta rows compaction just moved.
            await conn.execute("VACUUM (ANALYZE) fingerprints, fp_postings, fp_tombstones")
            # VACUUM frees the delta's index entries but not its pages: after a bulk load the
            # emptied delta's b-tree would stay the size of the largest delta it held (about
            # as large as the whole postings of a small catalogue). Rebuilt, it holds only
            # what the delta still has; CONCURRENTLY, so adds and lookups go on meanwhile.
            await conn.execute("REINDEX TABLE CONCURRENTLY fingerprints")
            await conn.execute("ANALYZE songs")

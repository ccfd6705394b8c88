"""SqliteStore: the zero-setup catalogue, one SQLite file through the standard library.

Its parts, one module each: schema (migrations, index version), catalogue (songs, lookups,
envelopes), ledger (the worker's processed objects), streams (segments, windows, plays,
events) and reports (the airplay report), all on the one connection and thread of
connection.py.
"""

from __future__ import annotations

import asyncio
import logging

from service.store.sqlite.catalogue import SqliteCatalogue
from service.store.sqlite.gaps import SqliteGaps
from service.store.sqlite.ledger import SqliteLedger
from service.store.sqlite.reports import SqliteReports
from service.store.sqlite.schema import SqliteSchema
from service.store.sqlite.streams import SqliteStreams

log = logging.getLogger(__name__)


class SqliteStore(
    SqliteSchema, SqliteCatalogue, SqliteLedger, SqliteStreams, SqliteReports, SqliteGaps
):
    """Catalogue in one SQLite file. Usable before `open()` (the `migrate` command and probes
    call it unopened); `close()` ends the connection and its thread."""

    async def open(self) -> None:
        await self._run(lambda conn: None)  # fail now, not at the first request
        try:
            if self._migrate_on_start:
                await self.migrate()
            if not await self._run(self._pending):
                await self._run(self._check_version)
            else:
                log.warning("database migrations are pending; run `song-detection migrate`")
        except BaseException:
            await self.close()
            raise

    def connection_pool_usage(self) -> tuple[int, int] | None:
        return None  # one connection on the store's own thread

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(executor, self._close_connection)
        finally:
            executor.shutdown(wait=False)

"""Bulk indexing: many sources (paths or s3:// URIs, with or without metadata) into the catalogue.

The command line's `index`, `import`, `backfill` and `reindex` all run `run_bulk`: each source
is fetched (an S3 object is downloaded to a temporary file), decoded and fingerprinted on the
CPU pool, every core busy, and stored one at a time by this loop, so the database sees one
writer. A source that cannot be read or decoded becomes a `failed` result and the run goes
on; only a store that stops answering ends it. Sources already in the catalogue (same
`source` recorded with a song) are `skipped` without being read, so a second run of the same
import does only what the first did not.
"""

from __future__ import annotations

import asyncio
import email.header
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Literal, Protocol
from urllib.parse import urlsplit

from service.audio.params import FingerprintParams
from service.core.index import (
    IndexOptions,
    analyse_source,
    find_duplicate,
    index_song,
    phase_analyser,
)
from service.errors import NotFound, ServiceError
from service.executor import CpuPool
from service.objects import Downloaded, ObjectCreated
from service.store import SongMeta, Store

Status = Literal["created", "existing", "duplicate", "skipped", "failed"]


class ObjectDownloader(Protocol):
    """What bulk indexing needs of S3 (service/aws/objects.py S3ObjectSource)."""

    def download(
        self, obj: ObjectCreated, tmp_dir: str | None = None
    ) -> AbstractAsyncContextManager[Downloaded | None]: ...


class UnreadableFile(ServiceError):
    """A named file exists but cannot be read (permissions, a folder, an I/O error)."""

    code = "unreadable_file"
    status = 422
    permanent = True


@dataclass(frozen=True)
class BulkItem:
    """One source to index: a local path (absolute) or an s3://bucket/key URI, with what the
    caller knows of it (None fields fall back to the file's tags, then its name)."""

    source: str
    meta: SongMeta | None = None
    #: Where it was named (a manifest's line number), for the report.
    origin: str = ""
    #: Store the song under this id, with `meta` exactly (reindex, restoring an export).
    song_id: int | None = None


@dataclass(frozen=True)
class BulkResult:
    source: str
    status: Status
    song_id: int | None = None
    title: str | None = None
    duplicate_of: int | None = None
    code: str | None = None
    message: str = ""
    origin: str = ""
    elapsed_s: float = 0.0


@dataclass
class BulkSummary:
    results: list[BulkResult] = field(default_factory=list)

    def count(self, status: Status) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def failed(self) -> int:
        return self.count("failed")


@dataclass(frozen=True, kw_only=True)
class BulkOptions:
    #: The catalogue's fingerprint parameters (its index format).
    params: FingerprintParams
    #: Sources analysed at once (downloads and the pool's queue): about twice the cores.
    in_flight: int = 4
    allow_duplicate: bool = False
    #: Skip sources recorded with a song already.
    resume: bool = True
    max_audio_s: float | None = None
    tmp_dir: str | None = None


def is_s3_uri(source: str) -> bool:
    return source.lower().startswith("s3://")


def split_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of s3://bucket/key."""
    parts = urlsplit(uri)
    if parts.scheme.lower() != "s3" or not parts.netloc:
        raise ValueError(f"not an s3://bucket/key URI: {uri}")
    return parts.netloc, parts.path.lstrip("/")


def _header_text(value: str) -> str:
    """S3 user metadata travels in HTTP headers; non-ASCII values arrive RFC 2047-encoded."""
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (LookupError, ValueError, UnicodeDecodeError):
        return value


def meta_from_object(metadata: dict[str, str], given: SongMeta | None) -> SongMeta | None:
    """What the caller gave, completed from an S3 object's `x-amz-meta-*` fields (title,
    artist, album, isrc, external-id or external_id)."""
    values = {k.lower().replace("-", "_"): _header_text(v) for k, v in metadata.items()}
    given = given or SongMeta(title="")
    fields = ("title", "artist", "album", "isrc", "external_id")
    merged = {name: getattr(given, name) or values.get(name) for name in fields}
    if not any(merged.values()):
        return None
    return SongMeta(**{**merged, "title": merged["title"] or ""})


@asynccontextmanager
async def _local(source: str) -> AsyncIterator[tuple[str, dict[str, str]]]:
    path = Path(source)
    if not path.exists():
        raise NotFound(f"no such file: {source}")
    if not path.is_file():
        raise UnreadableFile(f"not a file: {source}")
    try:
        with path.open("rb") as f:
            f.read(1)
    except OSError as exc:
        raise UnreadableFile(f"cannot read {source}: {exc.strerror or exc}") from exc
    yield source, {}


@asynccontextmanager
async def _s3(
    source: str, objects: ObjectDownloader | None, tmp_dir: str | None
) -> AsyncIterator[tuple[str, dict[str, str]]]:
    if objects is None:
        raise UnreadableFile(f"{source}: S3 is not configured in this process")
    bucket, key = split_s3_uri(source)
    download = objects.download(ObjectCreated(bucket, key), tmp_dir)
    try:
        downloaded = await download.__aenter__()
    except Exception as exc:  # access denied, no such bucket, the network: this source fails
        raise UnreadableFile(f"cannot download {source}: {exc}") from exc
    try:
        if downloaded is None:
            raise NotFound(f"no such object: {source}")
        yield downloaded.path, downloaded.metadata
    finally:
        await download.__aexit__(None, None, None)


class BulkIndexer:
    """Runs a bulk import; `on_result` is called once per source as it ends (progress)."""

    def __init__(
        self,
        store: Store,
        pool: CpuPool,
        options: BulkOptions,
        *,
        objects: ObjectDownloader | None = None,
        on_result: Callable[[BulkResult], None] | None = None,
    ) -> None:
        self._store = store
        self._pool = pool
        self._options = options
        self._objects = objects
        self._on_result = on_result
        self._store_lock = asyncio.Lock()

    async def run(self, items: Iterable[BulkItem]) -> BulkSummary:
        summary = BulkSummary()
        slots = asyncio.Semaphore(max(1, self._options.in_flight))
        running: set[asyncio.Task[None]] = set()

        async def one(item: BulkItem) -> None:
            try:
                result = await self._one(item)
            finally:
                slots.release()
            summary.results.append(result)
            if self._on_result is not None:
                self._on_result(result)

        try:
            for item in items:
                await slots.acquire()
                task = asyncio.create_task(one(item))
                running.add(task)
                task.add_done_callback(running.discard)
                # A store failure ends the run at once rather than failing every source.
                for done in [t for t in list(running) if t.done()]:
                    done.result()
            while running:
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    task.result()
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        return summary

    async def _one(self, item: BulkItem) -> BulkResult:
        started = time.monotonic()

        def result(status: Status, **kwargs: object) -> BulkResult:
            elapsed = round(time.monotonic() - started, 3)
            return BulkResult(item.source, status, origin=item.origin, elapsed_s=elapsed, **kwargs)  # type: ignore[arg-type]

        if not item.source:
            return result("failed", code="no_source", message="the song has no stored source")
        if self._options.resume:
            known = await self._store.find_by_source(item.source)
            if known is not None:
                return result("skipped", song_id=known.id, title=known.title)
        try:
            fetch = (
                _s3(item.source, self._objects, self._options.tmp_dir)
                if is_s3_uri(item.source)
                else _local(item.source)
            )
            params, max_audio_s = self._options.params, self._options.max_audio_s
            async with fetch as (path, metadata):
                audio, digest = await self._pool.run(
                    partial(analyse_source, path, params, max_audio_s)
                )
                options = IndexOptions(
                    meta=meta_from_object(metadata, item.meta),
                    filename=PurePosixPath(item.source).name,
                    source=item.source,
                    file_sha256=digest,
                    allow_duplicate=self._options.allow_duplicate,
                    song_id=item.song_id,
                    exact_meta=item.song_id is not None,
                )
                # Indexed while the file is at hand: the duplicate check may analyse it again.
                phases = phase_analyser(self._pool, path, params, max_audio_s)
                async with self._store_lock:
                    indexed = await index_song(self._store, audio, options, phases=phases)
        except ServiceError as exc:
            if not exc.permanent and not isinstance(exc, NotFound):
                raise
            return result("failed", code=exc.code, message=exc.message)
        except (OSError, ValueError) as exc:
            return result("failed", code="unreadable_file", message=str(exc))
        song = indexed.song
        if indexed.duplicate is not None:
            cover = min(indexed.duplicate.new_coverage, indexed.duplicate.stored_coverage)
            return result(
                "duplicate",
                song_id=song.id,
                title=song.title,
                duplicate_of=song.id,
                message=f"same recording as song {song.id} ({cover:.0%} coverage)",
            )
        status: Status = "created" if indexed.created else "existing"
        return result(status, song_id=song.id, title=song.title)


async def catalogue_items(store: Store, page_songs: int = 500) -> AsyncIterator[BulkItem]:
    """Every song of a catalogue as a source to index again under its id and metadata
    (`reindex`); a song without a source is yielded with an empty one (it cannot be rebuilt
    and is reported as failed)."""
    after = 0
    while True:
        page = await store.songs_after(after, page_songs)
        if not page:
            return
        for song in page:
            meta = SongMeta(song.title, song.artist, song.album, song.isrc, song.external_id)
            yield BulkItem(song.source or "", meta, f"song {song.id}", song.id)
        after = page[-1].id


@dataclass(frozen=True)
class SuspectedDuplicate:
    """Two stored songs found to be the same recording (`song_id` the later one)."""

    song_id: int
    duplicate_of: int
    coverage: float
    aligned_share: float


async def suspected_duplicates(
    store: Store,
    pool: CpuPool,
    *,
    in_flight: int = 4,
    objects: ObjectDownloader | None = None,
    on_song: Callable[[BulkResult], None] | None = None,
    params: FingerprintParams,
) -> tuple[list[SuspectedDuplicate], list[BulkResult]]:
    """Every pair of stored songs that are the same recording, found by analysing each song's
    source again and checking it against the rest of the catalogue (service/match/
    duplicates.py); songs whose source is missing or unreadable come back as failures."""
    pairs: dict[tuple[int, int], SuspectedDuplicate] = {}
    failures: list[BulkResult] = []
    slots = asyncio.Semaphore(max(1, in_flight))

    async def check(song_id: int, source: str) -> None:
        try:
            try:
                if not source:
                    raise NotFound("the song has no stored source")
                fetch = _s3(source, objects, None) if is_s3_uri(source) else _local(source)
                async with fetch as (path, _):
                    audio, _digest = await pool.run(partial(analyse_source, path, params))
                    phases = phase_analyser(pool, path, params)
                    overlap = await find_duplicate(store, audio, exclude=song_id, phases=phases)
            finally:
                slots.release()
        except ServiceError as exc:
            if not exc.permanent:
                raise
            result = BulkResult(source, "failed", song_id, code=exc.code, message=exc.message)
            failures.append(result)
        except (OSError, ValueError) as exc:
            result = BulkResult(source, "failed", song_id, code="unreadable_file", message=str(exc))
            failures.append(result)
        else:
            result = BulkResult(source, "existing", song_id)
            if overlap is not None:
                low, high = sorted((song_id, overlap.song_id))
                cover = min(overlap.new_coverage, overlap.stored_coverage)
                pairs.setdefault(
                    (low, high), SuspectedDuplicate(high, low, cover, overlap.aligned_share)
                )
                result = BulkResult(source, "duplicate", song_id, duplicate_of=overlap.song_id)
        if on_song is not None:
            on_song(result)

    tasks = []
    async for item in catalogue_items(store):
        await slots.acquire()
        tasks.append(asyncio.create_task(check(item.song_id or 0, item.source)))
    await asyncio.gather(*tasks)
    return sorted(pairs.values(), key=lambda p: (p.duplicate_of, p.song_id)), failures

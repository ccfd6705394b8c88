"""One entry point: `song-detection serve | worker | migrate | index | compact | identify | songs`.

Every command reads the same settings (DATABASE_URL, ...) as the service, so a catalogue built
from the command line is the one the API answers from, and vice versa.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TextIO

from service.audio.analysis import AnalysedAudio, analyse_file
from service.audio.envelopes import DEFAULT_ENVELOPE
from service.audio.formats import AUDIO_SUFFIXES
from service.audio.params import DEFAULT_PARAMS, FingerprintParams
from service.core.identify.identify import identify_file
from service.core.index import index_analysed
from service.errors import ServiceError
from service.executor import CpuPool
from service.memory import keep_freed_memory
from service.resources import PoolSpec, leave_unopened, open_resources
from service.settings import Settings
from service.store import Song


def _song_json(song: Song) -> dict[str, Any]:
    return {
        "id": song.id,
        "title": song.title,
        "artist": song.artist,
        "album": song.album,
        "isrc": song.isrc,
        "external_id": song.external_id,
        "duration_s": round(song.duration_s, 3),
        "fingerprint_count": song.fingerprint_count,
    }


def iter_audio_files(paths: Sequence[str]) -> Iterator[Path]:
    """Files named directly, plus audio files found recursively in named folders, sorted."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
            )
        else:
            yield path


class Progress:
    """A one-line progress bar on stderr (only when it is a terminal, else periodic lines)."""

    def __init__(self, total: int, out: TextIO = sys.stderr) -> None:
        self.total, self.done, self.out = total, 0, out
        self.started = time.monotonic()
        self.tty = out.isatty()

    def step(self, label: str) -> None:
        self.done += 1
        elapsed = time.monotonic() - self.started
        width = 30
        filled = int(width * self.done / max(self.total, 1))
        line = (
            f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
            f"{elapsed:6.1f}s  {label[-50:]}"
        )
        if self.tty:
            self.out.write("\r" + line.ljust(110))
            if self.done == self.total:
                self.out.write("\n")
        elif self.done == self.total or self.done % 25 == 0:
            self.out.write(line + "\n")
        self.out.flush()


async def cmd_migrate(settings: Settings) -> int:
    async with open_resources(settings, open_store=leave_unopened) as resources:
        applied = await resources.store.migrate()
    print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")
    return 0


async def analyse_in_completion_order(
    pool: CpuPool,
    files: Sequence[Path],
    in_flight: int,
    max_audio_s: float | None = None,
    params: FingerprintParams = DEFAULT_PARAMS,
) -> AsyncIterator[tuple[Path, AnalysedAudio | ServiceError]]:
    """Analyse `files` on the pool, yielding each (with its result or audio error) as it ends.

    At most `in_flight` files are submitted at once, so results never pile up faster than the
    caller stores them, while every worker always has a file queued behind the current one.
    """
    remaining = iter(files)
    running: dict[asyncio.Future[AnalysedAudio], Path] = {}

    def submit() -> None:
        for path in remaining:
            task = asyncio.ensure_future(
                pool.run(
                    partial(
                        analyse_file,
                        str(path),
                        params,
                        DEFAULT_ENVELOPE,
                        max_duration_s=max_audio_s,
                    )
                )
            )
            running[task] = path
            return

    for _ in range(max(1, in_flight)):
        submit()
    try:
        while running:
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                path = running.pop(task)
                submit()
                try:
                    yield path, task.result()
                except ServiceError as exc:
                    yield path, exc
    finally:
        for task in running:
            task.cancel()


async def cmd_index(settings: Settings, paths: Sequence[str], workers: int) -> int:
    files = list(iter_audio_files(paths))
    if not files:
        print("no audio files found", file=sys.stderr)
        return 1
    created = existing = 0
    failures: list[tuple[Path, str]] = []
    progress = Progress(len(files))
    started = time.monotonic()
    # Decoding and fingerprinting fan out over spawned worker processes (one per core by
    # default); storing stays on this loop, one song at a time while the workers go on, so the
    # database sees one writer.
    async with open_resources(settings, pool=PoolSpec(workers)) as resources:
        store, pool = resources.store, resources.pool
        assert pool is not None
        async for path, outcome in analyse_in_completion_order(
            pool, files, 2 * pool.workers, settings.max_index_audio_s, resources.fp_params
        ):
            try:
                if isinstance(outcome, ServiceError):
                    raise outcome
                _, was_created = await index_analysed(store, outcome, None, str(path))
                created += was_created
                existing += not was_created
            except ServiceError as exc:
                failures.append((path, f"{exc.code}: {exc.message}"))
            progress.step(path.name)
        if created:
            await store.optimize()
    elapsed = time.monotonic() - started
    print(
        f"indexed {created} new song(s), {existing} already known, {len(failures)} failed "
        f"in {elapsed:.1f} s"
    )
    for path, reason in failures:
        print(f"  failed: {path}: {reason}", file=sys.stderr)
    return 1 if failures else 0


async def cmd_compact(settings: Settings, purge: bool) -> int:
    async with open_resources(settings) as resources:
        result = await resources.store.compact(purge=purge)
    print(
        f"compacted {result.fingerprints} fingerprint(s) into {result.hashes} hash(es); "
        f"purged {result.purged_songs} deleted song(s)"
    )
    return 0


async def cmd_identify(settings: Settings, files: Sequence[str], as_json: bool) -> int:
    status = 0
    async with open_resources(settings, pool=PoolSpec(1, use_processes=False)) as resources:
        store, pool, params = resources.store, resources.pool, resources.match_params
        assert pool is not None
        for name in files:
            try:
                result = await identify_file(
                    store,
                    pool,
                    name,
                    params,
                    resources.fp_params,
                    max_audio_s=settings.max_identify_audio_s,
                )
            except ServiceError as exc:
                print(f"{name}: error {exc.code}: {exc.message}", file=sys.stderr)
                status = 1
                continue
            matches = [
                {
                    "song": _song_json(m.song),
                    "score": m.match.score,
                    "confidence": round(m.match.confidence, 6),
                    "song_offset_s": round(m.match.song_offset_s, 3),
                    "query_start_s": round(m.match.query_start_s, 3),
                    "query_end_s": round(m.match.query_end_s, 3),
                    "speed": round(m.match.speed, 4),
                    "evidence": m.match.evidence,
                }
                for m in result.matches
            ]
            if as_json:
                print(
                    json.dumps({"file": name, "duration_s": result.duration_s, "matches": matches})
                )
            elif not matches:
                print(f"{name}: no match")
            else:
                for m in matches:
                    song = m["song"]
                    print(
                        f"{name}: {song['title']} - {song['artist'] or '?'} (id {song['id']}) "
                        f"at {m['song_offset_s']:.2f} s, score {m['score']}, "
                        f"confidence {m['confidence']:.4f}"
                    )
    return status


async def cmd_songs(settings: Settings, query: str | None, limit: int, as_json: bool) -> int:
    async with open_resources(settings) as resources:
        page = await resources.store.list_songs(limit=limit, offset=0, query=query)
    if as_json:
        print(json.dumps({"total": page.total, "items": [_song_json(s) for s in page.items]}))
        return 0
    for s in page.items:
        print(f"{s.id:>7}  {s.duration_s:7.1f}s  {s.title}  -  {s.artist or ''}")
    print(f"{page.total} song(s) in the catalogue")
    return 0


async def cmd_worker(settings: Settings) -> int:
    if not settings.sqs_queue_url:
        print("configuration error: the worker needs SQS_QUEUE_URL", file=sys.stderr)
        return 2
    from service.hosts import run_worker

    return await run_worker(settings)


def cmd_serve(settings: Settings) -> int:
    import uvicorn

    from service.hosts import HTTP_PROTOCOL, create_app

    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        http=HTTP_PROTOCOL,  # unparseable requests get a JSON error too
        log_level=settings.log_level.lower(),
        # ECS gives a task 30 s between SIGTERM and SIGKILL: finish requests well within it.
        timeout_graceful_shutdown=20,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="song-detection", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--host", help="bind address (default: HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: PORT or 8000)")
    sub.add_parser(
        "worker",
        help="poll SQS_QUEUE_URL for S3 upload events: index, identify, report (until SIGTERM)",
    )
    sub.add_parser("migrate", help="apply pending database migrations")
    index = sub.add_parser("index", help="index audio files or folders (recursively)")
    index.add_argument("paths", nargs="+")
    index.add_argument(
        "--workers", type=int, default=0, help="processes (default: one per CPU core)"
    )
    compact = sub.add_parser(
        "compact", help="fold recently indexed fingerprints into the compact index (PostgreSQL)"
    )
    compact.add_argument(
        "--purge", action="store_true", help="also reclaim the space of deleted songs"
    )
    identify = sub.add_parser("identify", help="identify audio clips")
    identify.add_argument("files", nargs="+")
    identify.add_argument("--json", action="store_true", help="one JSON object per file")
    songs = sub.add_parser("songs", help="list the catalogue")
    songs.add_argument("-q", "--query", help="text filter")
    songs.add_argument("--limit", type=int, default=100)
    songs.add_argument("--json", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides: dict[str, Any] = {}
    if args.command == "serve":
        overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v}
    try:
        settings = Settings(**overrides)
    except ValueError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command in ("serve", "worker", "index", "identify"):
        keep_freed_memory()
    try:
        match args.command:
            case "serve":
                return cmd_serve(settings)
            case "worker":
                return asyncio.run(cmd_worker(settings))
            case "migrate":
                return asyncio.run(cmd_migrate(settings))
            case "index":
                workers = args.workers or settings.effective_cpu_workers
                return asyncio.run(cmd_index(settings, args.paths, workers))
            case "compact":
                return asyncio.run(cmd_compact(settings, args.purge))
            case "identify":
                return asyncio.run(cmd_identify(settings, args.files, args.json))
            case "songs":
                return asyncio.run(cmd_songs(settings, args.query, args.limit, args.json))
    except ServiceError as exc:
        print(f"error {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())

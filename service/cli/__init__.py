"""song-detection: identify the songs of your catalogue in audio files and live streams.

Every command reads the same settings as the service (environment variables or a .env file in
the working directory): DATABASE_URL (or DB_HOST and its parts) names the catalogue; unset,
it is the SQLite file song-detection.sqlite3 in DATA_DIR (default
$XDG_DATA_HOME/song-detection, that is ~/.local/share/song-detection), whatever the working
directory. `song-detection info` prints which catalogue a command uses.

Errors are one line on stderr, `song-detection: error <code>: <message>`, with the codes of
the HTTP API, and a non-zero exit status (1: the command failed, 2: bad usage or
configuration, 130: interrupted); --debug also prints the traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import traceback
from collections.abc import Sequence
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NoReturn

from pydantic import ValidationError

from service.audio.params import DEFAULT_PARAMS, params_for_format
from service.cli import bulk, catalogue
from service.cli.common import CliFailure, say_error
from service.core.bulk import catalogue_items, is_s3_uri
from service.errors import ServiceError
from service.memory import keep_freed_memory
from service.resources import PoolSpec, open_resources
from service.settings import Settings
from service.store import PlayReportQuery, create_store
from service.telemetry.logs import configure_logging

EPILOG = (
    "Settings: DATABASE_URL (or DB_HOST, DB_PORT, DB_NAME, DB_USER, DB_PASSWORD, DB_SSLMODE), "
    "DATA_DIR, CPU_WORKERS, MAX_INDEX_AUDIO_S, LOG_LEVEL, ...: every variable is in the README "
    "(Configuration). `song-detection COMMAND --help` describes a command."
)


def package_version() -> str:
    try:
        return version("song-detection")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


class Parser(argparse.ArgumentParser):
    """Usage errors as one line with the API's code, exit status 2."""

    def error(self, message: str) -> NoReturn:
        say_error("validation_error", f"{message} (see `{self.prog} --help`)")
        sys.exit(2)


def _datetime(value: str) -> datetime:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from exc


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from exc
    if number < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {value!r}")
    return number


def _add_bulk_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--workers",
        type=_positive,
        default=0,
        help="processes that decode and fingerprint (default: CPU_WORKERS, 0 = one per core)",
    )
    command.add_argument(
        "--allow-duplicate",
        action="store_true",
        help="index a file even when it is the same recording as a stored song (re-encoded, "
        "resampled, quieter, silence trimmed); by default that file is reported as a "
        "duplicate and not added",
    )
    command.add_argument(
        "--report",
        metavar="FILE",
        help="write every file's result to FILE: JSON when it ends in .json, else CSV",
    )
    command.add_argument(
        "--no-table", action="store_true", help="leave out the per-file result table"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="song-detection",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"song-detection {package_version()} (fingerprint version "
        f"{DEFAULT_PARAMS.version})",
    )
    parser.add_argument(
        "--debug", action="store_true", help="print the traceback of an error as well"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, description: str = "") -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=summary,
            description=description or summary,
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    serve = command(
        "serve",
        "run the HTTP API (and the SQS poller when SQS_QUEUE_URL is set)",
        "Run the HTTP API, the web page at / and the OpenAPI page at /docs. With SQS_QUEUE_URL "
        "set (and RUN_WORKER_IN_API not false) the SQS poller runs in the same process.",
    )
    serve.add_argument("--host", help="bind address (default: HOST, else 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: PORT, else 8000)")
    command(
        "worker",
        "poll SQS for S3 uploads: index, identify, report (until SIGTERM)",
        "Poll SQS_QUEUE_URL for the bucket's upload events: songs_to_index/ is indexed, "
        "songs_to_check/ identified (a JSON report beside each file), songs_to_check/streams/ "
        "becomes airplay logs; results go to SNS_TOPIC_ARN. Runs until SIGTERM; health on "
        "WORKER_HEALTH_PORT. See docs/worker.md.",
    )
    command("migrate", "apply pending database migrations and exit")
    command(
        "info",
        "where the catalogue is, its size and fingerprint version",
        "Print the store (SQLite file or PostgreSQL URL without its password), the number of "
        "songs and fingerprints, the database size, the fingerprint version the catalogue "
        "was built with and whether migrations are pending.",
    ).add_argument("--json", action="store_true", help="one JSON object")

    index = command(
        "index",
        "index audio files or folders (recursively), every core",
        "Index audio files, and the audio files in folders (recursively). A file indexed "
        "before (same path) is skipped without being read; the same audio or the same "
        "recording as a stored song is not added twice. Exit status 1 when any file failed.",
    )
    index.add_argument("paths", nargs="+", metavar="PATH", help="audio files or folders")
    _add_bulk_options(index)

    imp = command(
        "import",
        "index from manifests (CSV with metadata), list files, folders or s3:// URIs",
        "Index every source named: a CSV manifest (header row; a path column, one of "
        "path, source, uri, s3_uri, file, holding a local path relative to the manifest "
        "or an s3://bucket/key URI, and any of title, artist, album, isrc, external_id), a "
        "list file (.txt, .lst, .m3u: one path or URI a line), a folder (audio files "
        "recursively), an audio file or an s3:// URI. A source already indexed is skipped, "
        "so running an import again finishes what the last run did not. Manifest metadata "
        "wins over the file's tags, which win over its name. Exit status 1 when any source "
        "failed. See docs/catalogue.md.",
    )
    imp.add_argument(
        "sources", nargs="+", metavar="SOURCE", help="manifests, lists, folders, files, URIs"
    )
    imp.add_argument(
        "--keep-ids",
        action="store_true",
        help="store each song under the manifest's id column (restoring an export)",
    )
    _add_bulk_options(imp)

    backfill = command(
        "backfill",
        "index every audio object under an s3://bucket/prefix/",
        "Index every audio object under an S3 prefix, with its x-amz-meta-title, -artist, "
        "-album, -isrc and -external-id metadata; objects indexed before are skipped. Uses "
        "the worker's settings (AWS_REGION, AWS_ENDPOINT_URL, credentials from the standard "
        "chain), so it runs as a one-off task of the worker's image.",
    )
    backfill.add_argument("uri", metavar="S3_URI", help="s3://bucket/prefix/")
    _add_bulk_options(backfill)

    dedup = command(
        "dedup",
        "list stored songs that are the same recording as another (near-duplicates)",
        "Analyse every song's stored source again and check it against the rest of the "
        "catalogue, as indexing does: pairs that are the same recording (re-encoded, "
        "resampled, quieter, silence trimmed) are listed; nothing is changed. Songs without "
        "a readable source are counted as not checked.",
    )
    dedup.add_argument(
        "--workers",
        type=_positive,
        default=0,
        help="processes that decode and fingerprint (default: CPU_WORKERS, 0 = one per core)",
    )
    dedup.add_argument(
        "--format", choices=("text", "csv", "json"), default="text", help="output (text)"
    )

    reindex = command(
        "reindex",
        "rebuild a catalogue from its songs' sources under this release's fingerprints",
        "Read every song of the catalogue at --from (any fingerprint version) and index its "
        "stored source (path or s3:// URI) again into the catalogue at --to, under this "
        "release's fingerprint parameters, keeping each song's id and metadata. Songs "
        "without a source, or whose source is gone, are reported and left out (exit status "
        "1). Running it again finishes an interrupted rebuild. See docs/catalogue.md.",
    )
    reindex.add_argument(
        "--from",
        dest="from_url",
        required=True,
        metavar="OLD_URL",
        help="the catalogue to rebuild (DATABASE_URL form); only read",
    )
    reindex.add_argument(
        "--to",
        dest="to_url",
        required=True,
        metavar="NEW_URL",
        help="the catalogue to build (DATABASE_URL form; new or partly built)",
    )
    reindex.add_argument(
        "--workers",
        type=_positive,
        default=0,
        help="processes that decode and fingerprint (default: CPU_WORKERS, 0 = one per core)",
    )
    reindex.add_argument("--report", metavar="FILE", help="every song's result (.json or CSV)")
    reindex.add_argument(
        "--no-table", action="store_true", help="leave out the per-song result table"
    )

    compact = command(
        "compact", "fold recently indexed fingerprints into the compact index (PostgreSQL)"
    )
    compact.add_argument(
        "--purge", action="store_true", help="also reclaim the space of deleted songs"
    )
    identify = command("identify", "identify audio clips")
    identify.add_argument("files", nargs="+", metavar="FILE", help="audio or video files")
    identify.add_argument("--json", action="store_true", help="one JSON object per file")
    songs = command("songs", "list the catalogue")
    songs.add_argument(
        "-q", "--query", help="text filter on title, artist, album, isrc, external id"
    )
    songs.add_argument("--limit", type=_positive, default=100, help="most songs listed (100)")
    songs.add_argument("--json", action="store_true", help="one JSON object")
    delete = command("delete", "delete songs (and their fingerprints) by id")
    delete.add_argument("ids", nargs="+", type=_positive, metavar="ID", help="song ids")
    export = command(
        "export",
        "the catalogue's metadata as CSV (or JSON lines)",
        "Write every song's id, metadata, duration, source and hashes as CSV (a manifest "
        "`import` reads back) or JSON lines, streamed page by page.",
    )
    export.add_argument("-o", "--output", metavar="FILE", help="write to FILE (default: stdout)")
    export.add_argument("--json", action="store_true", help="JSON lines instead of CSV")
    plays_cmd = command(
        "plays",
        "a live stream's airplay log (no name: list the streams)",
        "Print a stream's airplay log, every page, as text, CSV or JSON lines.",
    )
    plays_cmd.add_argument("stream", nargs="?", help="stream name")
    plays_cmd.add_argument(
        "--from", dest="since", type=_datetime, help="plays on air after (ISO 8601, UTC)"
    )
    plays_cmd.add_argument(
        "--to", dest="until", type=_datetime, help="plays starting before (ISO 8601, UTC)"
    )
    plays_cmd.add_argument(
        "--format", choices=("text", "csv", "json"), default="text", help="output (text)"
    )
    report = command(
        "report",
        "airplay across streams by song, ISRC, stream or day (plays, airtime, first/last)",
        "Aggregate the airplay logs of every stream (or one) over a time range: per song, "
        "ISRC, stream or UTC day, the number of plays, the airtime inside the range and when "
        "the first play started and the last ended. The same report as GET /reports/plays.",
    )
    report.add_argument(
        "--from", dest="since", type=_datetime, help="plays on air after (ISO 8601, UTC)"
    )
    report.add_argument(
        "--to", dest="until", type=_datetime, help="plays starting before (ISO 8601, UTC)"
    )
    report.add_argument("--stream", help="only this stream's plays")
    report.add_argument(
        "--group-by",
        choices=("song", "isrc", "stream", "day"),
        default="song",
        help="one row per song (default), ISRC, stream or UTC day",
    )
    report.add_argument(
        "--format", choices=("text", "csv", "json"), default="text", help="output (text)"
    )
    return parser


def _settings(overrides: dict[str, Any]) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']).upper() or 'settings'}: {e['msg']}"
            for e in exc.errors()
        )
        raise CliFailure("configuration_error", problems, exit_code=2) from exc
    except ValueError as exc:
        raise CliFailure("configuration_error", str(exc), exit_code=2) from exc


async def _bulk(settings: Settings, args: argparse.Namespace) -> int:
    workers = args.workers or settings.effective_cpu_workers
    started = time.monotonic()
    if args.command == "backfill":
        async with open_resources(settings, pool=PoolSpec(workers), aws=True) as resources:
            items = await bulk.backfill_items(resources, args.uri)
            if not items:
                raise CliFailure("not_found", f"no audio objects under {args.uri}")
            summary = await bulk.run_items(
                settings,
                items,
                workers=workers,
                allow_duplicate=args.allow_duplicate,
                resources=resources,
            )
    else:
        names = args.paths if args.command == "index" else args.sources
        items = bulk.items_of(names, keep_ids=getattr(args, "keep_ids", False))
        if not items:
            raise CliFailure("not_found", "no audio files found")
        # Restoring an export keeps every song it lists, copies kept on purpose included.
        keep_all = args.allow_duplicate or getattr(args, "keep_ids", False)
        summary = await bulk.run_items(settings, items, workers=workers, allow_duplicate=keep_all)
    return bulk.finish(summary, time.monotonic() - started, args.report, not args.no_table)


async def _reindex(settings: Settings, args: argparse.Namespace) -> int:
    old = _settings({"database_url": args.from_url})
    new = _settings({"database_url": args.to_url})
    if old.database_url == new.database_url:
        raise CliFailure("bad_request", "--from and --to name the same catalogue")
    stored = await catalogue.stored_version_of(old)
    if stored is None:
        raise CliFailure("not_found", f"no catalogue at {args.from_url}")
    started = time.monotonic()
    source = create_store(old, stored)  # opened under the version it was built with
    try:
        await source.open()
        items = [item async for item in catalogue_items(source)]
        # Deleted songs' ids count too: no id the old catalogue handed out is given again.
        highest_id = await source.highest_song_id()
    finally:
        await source.close()
    workers = args.workers or settings.effective_cpu_workers
    needs_s3 = any(is_s3_uri(i.source) for i in items)
    async with open_resources(new, pool=PoolSpec(workers), aws=needs_s3) as resources:
        summary = await bulk.run_items(
            new, items, workers=workers, allow_duplicate=True, resources=resources
        )
        await resources.store.sync_song_ids(highest_id)
    print(f"rebuilt {stored} -> {params_for_format(new.fingerprint_format).version}")
    return bulk.finish(summary, time.monotonic() - started, args.report, not args.no_table)


async def cmd_worker(settings: Settings) -> int:
    if not settings.sqs_queue_url:
        raise CliFailure("configuration_error", "the worker needs SQS_QUEUE_URL", exit_code=2)
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
        log_config=None,  # uvicorn's lines go through our handler (LOG_FORMAT) like the app's
        # ECS gives a task 30 s between SIGTERM and SIGKILL: finish requests well within it.
        timeout_graceful_shutdown=20,
    )
    return 0


def _run(args: argparse.Namespace, settings: Settings) -> int:
    match args.command:
        case "serve":
            return cmd_serve(settings)
        case "worker":
            return asyncio.run(cmd_worker(settings))
        case "migrate":
            return asyncio.run(catalogue.cmd_migrate(settings))
        case "info":
            return asyncio.run(catalogue.cmd_info(settings, args.json))
        case "index" | "import" | "backfill":
            return asyncio.run(_bulk(settings, args))
        case "reindex":
            return asyncio.run(_reindex(settings, args))
        case "dedup":
            workers = args.workers or settings.effective_cpu_workers
            return asyncio.run(bulk.dedup(settings, workers, args.format))
        case "compact":
            return asyncio.run(catalogue.cmd_compact(settings, args.purge))
        case "report":
            query = PlayReportQuery(args.group_by, args.since, args.until, args.stream)
            return asyncio.run(catalogue.cmd_report(settings, query, args.format))
        case "identify":
            return asyncio.run(catalogue.cmd_identify(settings, args.files, args.json))
        case "songs":
            return asyncio.run(catalogue.cmd_songs(settings, args.query, args.limit, args.json))
        case "delete":
            return asyncio.run(catalogue.cmd_delete(settings, args.ids))
        case "export":
            return asyncio.run(catalogue.cmd_export(settings, args.output, args.json))
        case "plays":
            return asyncio.run(
                catalogue.cmd_plays(settings, args.stream, args.since, args.until, args.format)
            )
    raise CliFailure("validation_error", f"unknown command {args.command}", exit_code=2)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug
    try:
        overrides: dict[str, Any] = {}
        if args.command == "serve":
            overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v}
        settings = _settings(overrides)
        configure_logging(settings.log_level, settings.log_format)
        if args.command in (
            "serve",
            "worker",
            "index",
            "import",
            "backfill",
            "reindex",
            "identify",
        ):
            keep_freed_memory()
        return _run(args, settings)
    except CliFailure as exc:
        if debug:
            traceback.print_exc()
        say_error(exc.code, exc.message)
        return exc.exit_code
    except ServiceError as exc:
        if debug:
            traceback.print_exc()
        say_error(exc.code, exc.message)
        return 1
    except OSError as exc:  # a file to read or write, named on the command line
        if debug:
            traceback.print_exc()
        say_error("io_error", str(exc))
        return 1
    except KeyboardInterrupt:
        say_error("interrupted", "stopped by the user")
        return 130
    except Exception as exc:
        if debug:
            traceback.print_exc()
            say_error("internal_error", f"{type(exc).__name__}: {exc}")
        else:
            say_error(
                "internal_error",
                f"{type(exc).__name__}: {exc} (run with --debug for the traceback)",
            )
        return 1

"""Bulk commands: index, import (manifests, list files, folders, S3 URIs), backfill (an S3
prefix), with a progress bar, a per-file result table and a machine-readable report."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from service.audio.formats import AUDIO_SUFFIXES
from service.cli.common import CliFailure
from service.core.bulk import (
    BulkIndexer,
    BulkItem,
    BulkOptions,
    BulkResult,
    BulkSummary,
    is_s3_uri,
    split_s3_uri,
    suspected_duplicates,
)
from service.resources import PoolSpec, Resources, open_resources
from service.settings import Settings
from service.store import SongMeta

#: Columns a manifest may name its source in (the first present is used).
SOURCE_COLUMNS = ("path", "source", "uri", "s3_uri", "file")
META_COLUMNS = ("title", "artist", "album", "isrc", "external_id")
LIST_SUFFIXES = (".txt", ".lst", ".list", ".m3u", ".m3u8")
REPORT_COLUMNS = (
    "source",
    "status",
    "song_id",
    "title",
    "duplicate_of",
    "code",
    "message",
    "origin",
    "elapsed_s",
)


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


def _local_source(raw: str, base: Path | None = None) -> str:
    """A local path as stored: absolute, so any working directory finds it again."""
    path = Path(raw).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    return str(path.absolute())


def read_manifest(path: Path, keep_ids: bool = False) -> list[BulkItem]:
    """A CSV manifest: a header row naming a source column (path, source, uri, s3_uri or
    file: a local path, relative to the manifest's folder, or an s3:// URI) and any of
    title, artist, album, isrc, external_id (and id, used with `keep_ids`); other columns
    are ignored, so `export`'s CSV is a manifest too."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = {(name or "").strip().lower(): name for name in reader.fieldnames or []}
            column = next((header[c] for c in SOURCE_COLUMNS if c in header), None)
            if column is None:
                raise CliFailure(
                    "bad_request",
                    f"{path}: the manifest needs a header row with a path column "
                    f"(one of {', '.join(SOURCE_COLUMNS)})",
                )
            items = []
            for row in reader:
                raw = (row.get(column) or "").strip()
                origin = f"{path.name}:{reader.line_num}"
                source = raw if is_s3_uri(raw) or not raw else _local_source(raw, path.parent)
                values = {
                    c: (row.get(header[c]) or "").strip() or None
                    for c in META_COLUMNS
                    if c in header
                }
                meta = SongMeta(**{"title": "", **values}) if values else None  # type: ignore[arg-type]
                song_id = None
                if keep_ids and "id" in header and (row.get(header["id"]) or "").strip():
                    try:
                        song_id = int(row[header["id"]])
                    except ValueError as exc:
                        raise CliFailure("bad_request", f"{origin}: id is not a number") from exc
                items.append(BulkItem(source or f"(empty path at {origin})", meta, origin, song_id))
            return items
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CliFailure("unreadable_file", f"cannot read the manifest {path}: {exc}") from exc


def read_list(path: Path) -> list[BulkItem]:
    """A list file: one path or s3:// URI a line; blank lines and # comments are skipped."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliFailure("unreadable_file", f"cannot read the list {path}: {exc}") from exc
    items = []
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            source = line if is_s3_uri(line) else _local_source(line, path.parent)
            items.append(BulkItem(source, None, f"{path.name}:{number}"))
    return items


def items_of(arguments: Sequence[str], keep_ids: bool = False) -> list[BulkItem]:
    """What `import` is given, as sources: manifests (.csv), list files, folders (audio
    files recursively), files and s3:// URIs."""
    items: list[BulkItem] = []
    for raw in arguments:
        path = Path(raw)
        if is_s3_uri(raw):
            items.append(BulkItem(raw))
        elif path.suffix.lower() == ".csv" and path.is_file():
            items.extend(read_manifest(path, keep_ids))
        elif path.suffix.lower() in LIST_SUFFIXES and path.is_file():
            items.extend(read_list(path))
        else:
            items.extend(BulkItem(_local_source(str(p))) for p in iter_audio_files([raw]))
    return items


def write_report(path: str, results: Iterable[BulkResult]) -> None:
    """Every source's result, as JSON (a list; `.json`) or CSV (REPORT_COLUMNS)."""
    rows = [asdict(r) for r in results]
    try:
        with open(path, "w", newline="", encoding="utf-8") as out:
            if path.lower().endswith(".json"):
                json.dump(rows, out, indent=1)
            else:
                writer = csv.DictWriter(out, REPORT_COLUMNS, lineterminator="\n")
                writer.writeheader()
                writer.writerows(rows)
    except OSError as exc:
        raise CliFailure("unreadable_file", f"cannot write the report {path}: {exc}") from exc


def print_table(results: Sequence[BulkResult]) -> None:
    """The per-file result table (stdout), in the order the sources were given."""
    if not results:
        return
    print(f"{'status':<10} {'song':>7}  source")
    for r in results:
        note = f"  ({r.code}: {r.message})" if r.code else (f"  ({r.message})" if r.message else "")
        song = "" if r.song_id is None else str(r.song_id)
        print(f"{r.status:<10} {song:>7}  {r.source}{note}")


async def run_items(
    settings: Settings,
    items: list[BulkItem],
    *,
    workers: int,
    allow_duplicate: bool,
    resume: bool = True,
    resources: Resources | None = None,
) -> BulkSummary:
    """Index `items` with a progress bar (rate and ETA) on stderr."""
    needs_s3 = any(is_s3_uri(i.source) for i in items)
    tty = sys.stderr.isatty()
    with tqdm(
        total=len(items),
        unit="file",
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0.2 if tty else 15.0,
        smoothing=0.1,
    ) as bar:

        def step(result: BulkResult) -> None:
            bar.set_postfix_str(result.status, refresh=False)
            bar.update(1)

        async def run(opened: Resources) -> BulkSummary:
            assert opened.pool is not None
            objects = opened.object_source() if opened.aws is not None else None
            options = BulkOptions(
                params=opened.fp_params,
                in_flight=2 * workers,
                allow_duplicate=allow_duplicate,
                resume=resume,
                max_audio_s=settings.max_index_audio_s,
            )
            indexer = BulkIndexer(
                opened.store,
                opened.pool,
                options,
                objects=objects,
                on_result=step,
            )
            summary = await indexer.run(items)
            if summary.count("created"):
                await opened.store.optimize()
            return summary

        if resources is not None:
            summary = await run(resources)
        else:
            async with open_resources(settings, pool=PoolSpec(workers), aws=needs_s3) as opened:
                summary = await run(opened)
    order = {item.source: n for n, item in enumerate(items)}
    summary.results.sort(key=lambda r: order.get(r.source, len(order)))
    return summary


def summary_line(summary: BulkSummary, elapsed_s: float) -> str:
    known = summary.count("existing") + summary.count("skipped") + summary.count("duplicate")
    return (
        f"indexed {summary.count('created')} new song(s), {known} already known, "
        f"{summary.failed} failed in {elapsed_s:.1f} s"
    )


def detail_line(summary: BulkSummary) -> str:
    return (
        f"  of those known: {summary.count('skipped')} skipped (source indexed before), "
        f"{summary.count('existing')} same audio, {summary.count('duplicate')} same recording "
        "as a stored song"
    )


async def backfill_items(resources: Resources, uri: str) -> list[BulkItem]:
    """Every audio object under an s3://bucket/prefix/, as sources."""
    bucket, prefix = split_s3_uri(uri)
    items = []
    async for key in resources.object_source().list_keys(bucket, prefix):
        if Path(key).suffix.lower() in AUDIO_SUFFIXES:
            items.append(BulkItem(f"s3://{bucket}/{key}"))
    return items


def finish(summary: BulkSummary, elapsed_s: float, report: str | None, table: bool) -> int:
    if table:
        print_table(summary.results)
    print(summary_line(summary, elapsed_s))
    print(detail_line(summary))
    for r in summary.results:
        if r.status == "failed":
            print(f"  failed: {r.source}: {r.code}: {r.message}", file=sys.stderr)
    if report:
        write_report(report, summary.results)
        print(f"report written to {report}")
    return 1 if summary.failed else 0


async def dedup(settings: Settings, workers: int, fmt: str) -> int:
    """`dedup`: the pairs of stored songs that are the same recording."""
    async with open_resources(settings, pool=PoolSpec(workers), aws=settings_has_s3(settings)) as r:
        assert r.pool is not None
        total = (await r.store.stats()).songs
        objects = r.object_source() if r.aws is not None else None
        with tqdm(total=total, unit="song", file=sys.stderr, dynamic_ncols=True) as bar:
            pairs, failures = await suspected_duplicates(
                r.store,
                r.pool,
                in_flight=2 * workers,
                objects=objects,
                on_song=lambda _: bar.update(1),
                params=r.fp_params,
            )
        songs = await r.store.get_songs([i for p in pairs for i in (p.song_id, p.duplicate_of)])
    if fmt == "json":
        for p in pairs:
            print(json.dumps(asdict(p)))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["song_id", "duplicate_of", "coverage", "aligned_share"])
        for p in pairs:
            writer.writerow([p.song_id, p.duplicate_of, p.coverage, round(p.aligned_share, 3)])
    else:
        for p in pairs:
            a, b = songs.get(p.song_id), songs.get(p.duplicate_of)
            print(
                f"song {p.song_id} ({a.title if a else '?'}) is the same recording as song "
                f"{p.duplicate_of} ({b.title if b else '?'}): {p.coverage:.0%} of both line up, "
                f"{p.aligned_share:.0%} of its landmarks"
            )
        print(f"{len(pairs)} suspected duplicate(s) among {total} song(s)")
    if failures:
        print(
            f"{len(failures)} song(s) not checked (no source, or it cannot be read): "
            + ", ".join(str(f.song_id) for f in failures[:20])
            + (" ..." if len(failures) > 20 else ""),
            file=sys.stderr,
        )
    return 0


def settings_has_s3(settings: Settings) -> bool:
    """Whether S3 sources can be read (an endpoint or a region with credentials: try)."""
    return bool(settings.aws_endpoint_url or settings.s3_bucket or settings.sqs_queue_url)

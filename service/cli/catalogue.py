"""Commands that read or change the catalogue and the airplay logs: migrate, compact, info,
songs, delete, export, identify, plays."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from service.audio.params import DEFAULT_PARAMS, params_for_format
from service.cli.common import (
    SONG_CSV_COLUMNS,
    CliFailure,
    say_error,
    song_json,
    song_row,
    store_location,
)
from service.core.airplay_report import report_csv, report_json
from service.core.identify.identify import identify_file
from service.core.streams import plays
from service.errors import NotFound, ServiceError
from service.resources import PoolSpec, leave_unopened, open_resources
from service.settings import Settings
from service.store import PlayReportQuery, Song, Store, StoreStats, create_store

#: Songs read per round trip when the whole catalogue is walked.
PAGE_SONGS = 500


async def cmd_migrate(settings: Settings) -> int:
    async with open_resources(settings, open_store=leave_unopened) as resources:
        applied = await resources.store.migrate()
    print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")
    return 0


async def cmd_compact(settings: Settings, purge: bool) -> int:
    async with open_resources(settings) as resources:
        result = await resources.store.compact(purge=purge)
    print(
        f"compacted {result.fingerprints} fingerprint(s) into {result.hashes} hash(es); "
        f"purged {result.purged_songs} deleted song(s)"
    )
    return 0


async def stored_version_of(settings: Settings) -> str | None:
    """The fingerprint version a catalogue was built with, read without opening it."""
    store = create_store(settings, DEFAULT_PARAMS.version)
    try:
        return await store.stored_version()
    finally:
        await store.close()


async def cmd_info(settings: Settings, as_json: bool) -> int:
    """Where the catalogue is, how big, and which fingerprint version built it."""
    stored = await stored_version_of(settings)
    # Opened under the version it was built with, so that a catalogue of another version
    # (which serve and index refuse) can still be described.
    opened = settings.model_copy(update={"migrate_on_start": False})
    store = create_store(opened, stored or DEFAULT_PARAMS.version)
    try:
        await store.open()
        pending = not await store.ready()
        # A database never migrated has no tables yet: an empty catalogue.
        stats = StoreStats(0, 0) if pending and stored is None else await store.stats()
    finally:
        await store.close()
    code_version = params_for_format(settings.fingerprint_format).version
    info: dict[str, Any] = {
        "store": "sqlite" if settings.is_sqlite else "postgresql",
        "location": store_location(settings),
        "songs": stats.songs,
        "fingerprints": stats.fingerprints,
        "database_bytes": stats.extra.get("database_bytes"),
        "fingerprint_version": stored,
        "code_fingerprint_version": code_version,
        "migrations_pending": pending,
    }
    if as_json:
        print(json.dumps(info))
        return 0
    print(f"store:               {info['store']} at {info['location']}")
    print(f"songs:               {stats.songs}")
    print(f"fingerprints:        {stats.fingerprints}")
    if info["database_bytes"] is not None:
        print(f"database size:       {info['database_bytes'] / 1e6:.1f} MB")
    print(f"fingerprint version: {stored or '(none yet: an empty catalogue)'}")
    if stored and stored != code_version:
        print(
            f"  this release fingerprints with {code_version} (FINGERPRINT_FORMAT="
            f"{settings.fingerprint_format}): rebuild the catalogue "
            "with `song-detection reindex` (see docs/catalogue.md)"
        )
    if pending:
        print("migrations:          pending (run `song-detection migrate`)")
    return 0


async def cmd_songs(settings: Settings, query: str | None, limit: int, as_json: bool) -> int:
    async with open_resources(settings) as resources:
        page = await resources.store.list_songs(limit=limit, offset=0, query=query)
    if as_json:
        print(json.dumps({"total": page.total, "items": [song_json(s) for s in page.items]}))
        return 0
    for s in page.items:
        print(f"{s.id:>7}  {s.duration_s:7.1f}s  {s.title}  -  {s.artist or ''}")
    print(f"{page.total} song(s) in the catalogue")
    return 0


async def cmd_delete(settings: Settings, song_ids: Sequence[int]) -> int:
    missing = []
    async with open_resources(settings) as resources:
        for song_id in song_ids:
            if await resources.store.delete_song(song_id):
                print(f"deleted song {song_id}")
            else:
                missing.append(song_id)
    for song_id in missing:
        say_error(NotFound.code, f"no song with id {song_id}")
    return 1 if missing else 0


async def iter_songs(store: Store) -> AsyncIterator[Song]:
    """Every song by id, a page at a time."""
    after = 0
    while True:
        page: list[Song] = await store.songs_after(after, PAGE_SONGS)
        if not page:
            return
        for song in page:
            yield song
        after = page[-1].id


async def cmd_export(settings: Settings, output: str | None, as_json: bool) -> int:
    """The catalogue's metadata as CSV (SONG_CSV_COLUMNS) or JSON lines, streamed."""
    out = sys.stdout if output in (None, "-") else Path(output).open("w", newline="")  # noqa: SIM115
    count = 0
    try:
        async with open_resources(settings) as resources:
            if as_json:
                async for song in iter_songs(resources.store):
                    row = dict(zip(SONG_CSV_COLUMNS, song_row(song), strict=True))
                    out.write(json.dumps({k: (v if v != "" else None) for k, v in row.items()}))
                    out.write("\n")
                    count += 1
            else:
                writer = csv.writer(out, lineterminator="\n")
                writer.writerow(SONG_CSV_COLUMNS)
                async for song in iter_songs(resources.store):
                    writer.writerow(song_row(song))
                    count += 1
    finally:
        if out is not sys.stdout:
            out.close()
    print(f"exported {count} song(s)", file=sys.stderr)
    return 0


async def cmd_identify(settings: Settings, files: Sequence[str], as_json: bool) -> int:
    status = 0
    async with open_resources(settings, pool=PoolSpec(1, use_processes=False)) as resources:
        store, pool, params = resources.store, resources.pool, resources.match_params
        assert pool is not None
        for name in files:
            try:
                if not Path(name).is_file():
                    raise NotFound(f"no such file: {name}")
                result = await identify_file(
                    store,
                    pool,
                    name,
                    params,
                    resources.fp_params,
                    max_audio_s=settings.max_identify_audio_s,
                )
            except ServiceError as exc:
                if not exc.permanent:
                    raise
                say_error(exc.code, f"{name}: {exc.message}")
                status = 1
                continue
            matches = [
                {
                    "song": song_json(m.song),
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


async def cmd_plays(
    settings: Settings,
    stream: str | None,
    since: datetime | None,
    until: datetime | None,
    fmt: str,
) -> int:
    """A stream's airplay log (every page), or the streams when no name is given."""
    if since is not None and until is not None and until <= since:
        raise CliFailure("bad_request", "--to must be later than --from")
    async with open_resources(settings) as resources:
        store = resources.store
        if stream is None:
            for s in await store.list_streams():
                print(f"{s.name}  (last segment {s.last_segment_at.isoformat()})")
            return 0
        offset, page_size, first = 0, 1000, True
        while True:
            query = plays.PlayQuery(since, until, page_size, offset)
            listing = await plays.list_plays(store, stream, query)
            if fmt == "csv":
                text = plays.plays_csv(listing.items)
                sys.stdout.write(text if first else text.split("\n", 1)[1])
            elif fmt == "json":
                for item in listing.items:
                    print(json.dumps(item, default=str))
            else:
                for p in listing.items:
                    song = p["song"]
                    print(
                        f"{p['start_at']}  {p['duration_s']:7.1f}s  {song['title']}"
                        f"  -  {song['artist'] or ''}  (song {song['id']}, {p['status']})"
                    )
            first = False
            offset += len(listing.items)
            if not listing.items or offset >= listing.total:
                break
    return 0


async def cmd_report(settings: Settings, query: PlayReportQuery, fmt: str) -> int:
    """The airplay report (service/core/airplay_report.py), streamed to stdout."""
    if query.since is not None and query.until is not None and query.until <= query.since:
        raise CliFailure("bad_request", "--to must be later than --from")
    async with open_resources(settings) as resources:
        store = resources.store
        if fmt == "csv":
            async for text in report_csv(store, query):
                sys.stdout.write(text)
        elif fmt == "json":
            async for text in report_json(store, query):
                sys.stdout.write(text)
        else:
            print(f"{query.group_by:<14} {'plays':>7} {'airtime':>10}  first aired -> last aired")
            async for row in store.play_report(query):
                label = row.key if row.title is None else f"{row.key} {row.title}"
                hours = row.airtime_s / 3600
                print(
                    f"{label[:40]:<14} {row.plays:>7} {hours:>9.2f}h  "
                    f"{row.first_aired:%Y-%m-%d %H:%M} -> {row.last_aired:%Y-%m-%d %H:%M}"
                )
    return 0

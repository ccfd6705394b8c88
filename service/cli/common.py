"""What every command shares: one-line errors, songs as JSON and CSV, where the store is."""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterable
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

from service.settings import Settings
from service.store import Song

#: The catalogue's CSV columns (`export`, and what `import` reads back).
SONG_CSV_COLUMNS = (
    "id",
    "title",
    "artist",
    "album",
    "isrc",
    "external_id",
    "duration_s",
    "fingerprint_count",
    "created_at",
    "source",
    "file_sha256",
    "content_sha256",
)


class CliFailure(Exception):
    """A command cannot go on: printed as one line, `error <code>: <message>`, exit 1."""

    def __init__(self, code: str, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.code, self.message, self.exit_code = code, message, exit_code


def say_error(code: str, message: str, out: TextIO | None = None) -> None:
    """One line on stderr, the API's error code first."""
    one_line = " ".join(str(message).split())
    print(f"song-detection: error {code}: {one_line}", file=out or sys.stderr)


def song_json(song: Song) -> dict[str, Any]:
    return {
        "id": song.id,
        "title": song.title,
        "artist": song.artist,
        "album": song.album,
        "isrc": song.isrc,
        "external_id": song.external_id,
        "duration_s": round(song.duration_s, 3),
        "fingerprint_count": song.fingerprint_count,
        "created_at": song.created_at.isoformat(),
        "source": song.source,
    }


def song_row(song: Song) -> list[Any]:
    """A song in SONG_CSV_COLUMNS order (empty cells for None)."""
    values = {
        **song_json(song),
        "file_sha256": song.file_sha256,
        "content_sha256": song.content_sha256,
    }
    return ["" if values[c] is None else values[c] for c in SONG_CSV_COLUMNS]


def write_csv(out: TextIO, header: Iterable[str], rows: Iterable[Iterable[Any]]) -> int:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(list(header))
    count = 0
    for row in rows:
        writer.writerow(list(row))
        count += 1
    return count


def store_location(settings: Settings) -> str:
    """Where the catalogue is: the SQLite file, or the PostgreSQL URL without its password."""
    if settings.is_sqlite:
        return settings.sqlite_path
    parts = urlsplit(settings.database_url)
    if parts.password:
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        netloc = f"{parts.username}:***@{host}" if parts.username else host
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts)

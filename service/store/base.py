"""The catalogue store: one narrow async interface, two implementations.

`postgres.py` (asyncpg pool, COPY ingest) serves production; `sqlite.py` (stdlib sqlite3 in a
thread) is the zero-setup default. Both keep a song row and its fingerprints in one
transaction, so a catalogue never holds half a song.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import numpy as np

from service.audio.hashes import Fingerprints
from service.matching import Hits

#: Song fields a client may set (POST /songs form fields, PATCH /songs/{id} body).
EDITABLE_FIELDS = ("title", "artist", "album", "isrc", "external_id")


@dataclass(frozen=True)
class SongMeta:
    title: str
    artist: str | None = None
    album: str | None = None
    isrc: str | None = None
    external_id: str | None = None


@dataclass(frozen=True)
class Song:
    id: int
    title: str
    artist: str | None
    album: str | None
    isrc: str | None
    external_id: str | None
    duration_s: float
    #: Length in STFT frames of the fingerprint parameters (the matcher's chance model uses it).
    n_frames: int
    content_sha256: str
    fingerprint_count: int
    created_at: datetime


@dataclass(frozen=True)
class NewSong:
    """Everything needed to add a song: metadata, audio digest and its fingerprints."""

    meta: SongMeta
    duration_s: float
    n_frames: int
    content_sha256: str
    fingerprints: Fingerprints


@dataclass(frozen=True)
class SongPage:
    items: list[Song]
    total: int
    limit: int
    offset: int


@dataclass(frozen=True)
class StoreStats:
    songs: int
    fingerprints: int
    extra: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ProcessedObject:
    """A row of the worker's idempotency ledger: one uploaded object version, processed.

    `result_json` is the report of that processing (exactly what goes to S3 and, condensed,
    to SNS); `published_at` stays None until both are out.
    """

    bucket: str
    key: str
    version_token: str
    kind: str
    result_json: str
    created_at: datetime
    claimed_at: datetime
    published_at: datetime | None


class Store(Protocol):
    """What the core needs from a catalogue."""

    async def open(self) -> None:
        """Connect (warm pool), apply pending migrations if asked, check the index version."""

    async def close(self) -> None: ...

    async def migrate(self) -> list[str]:
        """Apply pending migrations; returns the names applied. Safe when run concurrently."""

    async def ready(self) -> bool:
        """True when the database answers and every migration has run."""

    async def add_song(self, song: NewSong) -> tuple[Song, bool]:
        """Insert song and fingerprints atomically; (existing, False) if the content is known."""

    async def find_by_content(self, content_sha256: str) -> Song | None: ...

    async def lookup(self, hashes: np.ndarray) -> Hits:
        """Every stored fingerprint whose hash is in `hashes` (int32 array), in one round trip."""

    async def get_song(self, song_id: int) -> Song | None: ...

    async def get_songs(self, song_ids: list[int]) -> dict[int, Song]: ...

    async def list_songs(self, limit: int, offset: int, query: str | None = None) -> SongPage:
        """Songs by id; `query` filters case-insensitively on title, artist, album, isrc,
        external_id."""

    async def update_song(self, song_id: int, fields: dict[str, str | None]) -> Song | None:
        """Change editable metadata (keys from EDITABLE_FIELDS); None if the song is unknown."""

    async def delete_song(self, song_id: int) -> bool:
        """Remove a song and all its fingerprints; False if it did not exist."""

    async def stats(self) -> StoreStats: ...

    async def optimize(self) -> None:
        """Refresh planner statistics (and PostgreSQL's visibility map) after a bulk load.

        Without them a freshly loaded catalogue looks empty to the planner, which then scans
        the whole fingerprint table for every lookup instead of using the index.
        """

    # --- the SQS worker's idempotency ledger ------------------------------------------------

    async def get_processed(
        self, bucket: str, key: str, version_token: str
    ) -> ProcessedObject | None:
        """The ledger row of this object version, if it was processed."""

    async def record_processed(
        self, bucket: str, key: str, version_token: str, kind: str, result_json: str
    ) -> tuple[ProcessedObject, bool]:
        """Insert the row unless one exists; (row, True) when this call inserted it, which
        makes the caller the publisher (its claim starts now), else (existing row, False)."""

    async def claim_publication(
        self, bucket: str, key: str, version_token: str, lease_s: float
    ) -> bool:
        """Take over publishing an unpublished row whose claim is older than `lease_s` (its
        publisher died); True if this call now holds the claim."""

    async def mark_published(self, bucket: str, key: str, version_token: str) -> None:
        """Record that the row's report and SNS message are out."""

"""Choosing the catalogue store from `DATABASE_URL`.

The implementations are imported only when chosen, so a SQLite deployment never loads asyncpg.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from service.arrays import unique_values
from service.audio.hashes import Fingerprints
from service.errors import InvalidInput
from service.matching import Hits
from service.settings import Settings
from service.store.base import (
    EDITABLE_FIELDS,
    PLAY_FIELDS,
    CompactionResult,
    EnvelopeRange,
    EnvelopeSlice,
    NewSong,
    NewStream,
    Play,
    PlayEventDraft,
    PlayFields,
    PlayPage,
    ProcessedObject,
    Song,
    SongMeta,
    SongPage,
    Store,
    StoreStats,
    StreamEvent,
    StreamSegment,
    StreamState,
    StreamUpdate,
    StreamWindow,
    envelope_blob,
    envelope_slice,
)


def create_store(settings: Settings, params_version: str) -> Store:
    """An unopened store for `settings.database_url`; `params_version` is the index format
    the caller fingerprints with (`FingerprintParams.version`)."""
    if settings.is_sqlite:
        from service.store.sqlite import SqliteStore

        path = settings.sqlite_path
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        return SqliteStore(
            path,
            params_version,
            migrate_on_start=settings.migrate_on_start,
            busy_timeout_s=settings.db_command_timeout_s,
        )
    from service.store.postgres import PostgresStore

    return PostgresStore(
        settings.database_url,
        params_version,
        migrate_on_start=settings.migrate_on_start,
        pool_min_size=settings.db_pool_min_size,
        pool_max_size=settings.db_pool_max_size,
        command_timeout_s=settings.db_command_timeout_s,
        stall_timeout_s=settings.db_stall_timeout_s,
        compact_delta_rows=settings.compact_delta_rows,
    )


#: Columns both stream stores select (the schema is the same in both dialects).
STREAM_COLUMNS = (
    "id, name, pts_epoch_s, wall_origin, max_end_s, last_sequence, last_key, last_segment_at,"
    " created_at"
)
SEGMENT_COLUMNS = (
    "sequence, key, start_s, duration_s, pts_s, n_frames, peaks, envelope_format, envelope_bands,"
    " envelope, sustained_peaks"
)
PLAY_COLUMNS = ", ".join(("id", "stream_id", *PLAY_FIELDS, "created_at", "updated_at"))

#: Largest frame either store accepts: PostgreSQL postings hold 24 bits (149 hours of audio),
#: and SQLite refuses the same, so that both backends behave alike.
MAX_STORED_FRAME = (1 << 24) - 1


def unique_fingerprints(fingerprints: Fingerprints) -> tuple[np.ndarray, np.ndarray]:
    """(hashes, frames) as int32 without repeated pairs, sorted by hash then frame.

    Both stores keep each (hash, song, frame) once so that fingerprint_count and lookups agree
    across backends; hash order also makes the index inserts nearly sequential. Raises
    ValueError for a frame outside 0..MAX_STORED_FRAME.
    """
    offsets = fingerprints.offsets
    if len(offsets) and (offsets.min() < 0 or offsets.max() > MAX_STORED_FRAME):
        raise ValueError(f"fingerprint frames must lie in 0..{MAX_STORED_FRAME}")
    key = (fingerprints.hashes.astype(np.int64) << 32) | (
        fingerprints.offsets.astype(np.int64) & 0xFFFFFFFF
    )
    key = unique_values(key)
    return (key >> 32).astype(np.int32), (key & 0xFFFFFFFF).astype(np.uint32).view(np.int32)


#: Largest row id either store accepts (PostgreSQL's `integer` ids); anything larger names no
#: row in either, rather than failing in one of them.
MAX_ROW_ID = (1 << 31) - 1


def valid_id(row_id: int) -> bool:
    return 1 <= row_id <= MAX_ROW_ID


def reject_nul(*values: str | None) -> None:
    """Raise InvalidInput (422) for text with a NUL character: PostgreSQL cannot store one in
    `text`, so neither store accepts it (nor looks it up)."""
    if any(value is not None and "\x00" in value for value in values):
        raise InvalidInput("text must not contain NUL characters (\\u0000)")


def editable_changes(fields: dict[str, str | None]) -> list[str]:
    """Names of the columns `fields` sets, in EDITABLE_FIELDS order (safe to put in SQL).

    Raises InvalidInput (422) for a field clients may not set, an empty title (every song
    must be listable by name) or text with a NUL character.
    """
    reject_nul(*fields.values())
    unknown = set(fields) - set(EDITABLE_FIELDS)
    if unknown:
        raise InvalidInput(f"not editable: {', '.join(sorted(unknown))}")
    if "title" in fields and not (fields["title"] or "").strip():
        raise InvalidInput("title cannot be empty")
    return [name for name in EDITABLE_FIELDS if name in fields]


__all__ = [
    "MAX_ROW_ID",
    "MAX_STORED_FRAME",
    "CompactionResult",
    "EnvelopeRange",
    "EnvelopeSlice",
    "Hits",
    "NewSong",
    "NewStream",
    "Play",
    "PlayEventDraft",
    "PlayFields",
    "PlayPage",
    "ProcessedObject",
    "Song",
    "SongMeta",
    "SongPage",
    "Store",
    "StoreStats",
    "StreamEvent",
    "StreamSegment",
    "StreamState",
    "StreamUpdate",
    "StreamWindow",
    "create_store",
    "editable_changes",
    "envelope_blob",
    "envelope_slice",
    "reject_nul",
    "unique_fingerprints",
    "valid_id",
]


class CachedTotal:
    """A catalogue-wide count read from the database at most once per `ttl_s` and adjusted
    in between by this process's own adds and deletes: other processes' changes show within
    the ttl, which is all its users (the frequent-hash cap) need."""

    def __init__(self, ttl_s: float = 60.0) -> None:
        self._ttl_s = ttl_s
        self._value: int | None = None
        self._read_at = 0.0

    def fresh(self) -> int | None:
        if self._value is None or time.monotonic() - self._read_at > self._ttl_s:
            return None
        return self._value

    def set(self, value: int) -> None:
        self._value, self._read_at = value, time.monotonic()

    def adjust(self, change: int) -> None:
        if self._value is not None:
            self._value = max(0, self._value + change)


def drop_frequent(hits: Hits, max_postings: int | None, max_hits: int | None = None) -> Hits:
    """`hits` without the hashes that have more than `max_postings` of them, nor the most
    frequent ones past `max_hits` in all (see `kept_hashes`), for stores that cannot leave
    them out while reading."""
    if len(hits) == 0 or (max_postings is None and max_hits is None):
        return hits
    values, inverse, counts = np.unique(hits.hashes, return_inverse=True, return_counts=True)
    keep = kept_hashes(values, counts, max_postings, max_hits)[inverse]
    if keep.all():
        return hits
    return Hits(hits.hashes[keep], hits.song_ids[keep], hits.offsets[keep], hits.song_frames[keep])


def kept_hashes(
    values: np.ndarray, counts: np.ndarray, max_postings: int | None, max_hits: int | None
) -> np.ndarray:
    """Mask of the distinct hash `values` (with `counts` postings each) a lookup returns: those
    with at most `max_postings`, and of those the rarest first (ties: the lower hash) while
    their postings add up to at most `max_hits` (MatchParams.max_hits_per_lookup). The
    PostgreSQL lookup statement applies the same rule."""
    keep = counts <= max_postings if max_postings is not None else np.ones(len(counts), bool)
    if max_hits is not None and int(counts[keep].sum()) > max_hits:
        order = np.lexsort((values, counts))
        order = order[keep[order]]
        over = np.cumsum(counts[order]) > max_hits
        keep[order[over]] = False
    return keep

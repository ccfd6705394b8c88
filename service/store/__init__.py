"""The catalogue store: records, the interface by use, the shared rules and `create_store`.

Re-exports only; the backends (`service.store.postgres`, `service.store.sqlite`) are imported
when `create_store` chooses one, so a SQLite deployment never loads asyncpg.
"""

from service.store.envelopes import envelope_blob, envelope_slice
from service.store.factory import create_store
from service.store.protocols import Store
from service.store.records import (
    EDITABLE_FIELDS,
    PLAY_FIELDS,
    CompactionResult,
    EnvelopeRange,
    EnvelopeSlice,
    Hits,
    NewSong,
    NewStream,
    Play,
    PlayEventDraft,
    PlayEventType,
    PlayFields,
    PlayPage,
    PlayStatus,
    ProcessedObject,
    Song,
    SongMeta,
    SongPage,
    StoreStats,
    StreamEvent,
    StreamSegment,
    StreamState,
    StreamUpdate,
    StreamWindow,
)
from service.store.rules import (
    MAX_ROW_ID,
    MAX_STORED_FRAME,
    drop_frequent,
    editable_changes,
    kept_hashes,
    reject_nul,
    unique_fingerprints,
    valid_id,
)

__all__ = [
    "EDITABLE_FIELDS",
    "MAX_ROW_ID",
    "MAX_STORED_FRAME",
    "PLAY_FIELDS",
    "CompactionResult",
    "EnvelopeRange",
    "EnvelopeSlice",
    "Hits",
    "NewSong",
    "NewStream",
    "Play",
    "PlayEventDraft",
    "PlayEventType",
    "PlayFields",
    "PlayPage",
    "PlayStatus",
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
    "drop_frequent",
    "editable_changes",
    "envelope_blob",
    "envelope_slice",
    "kept_hashes",
    "reject_nul",
    "unique_fingerprints",
    "valid_id",
]

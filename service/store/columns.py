"""Column lists both dialects select: the schema is the same in PostgreSQL and SQLite, and the
record dataclasses take these columns as keyword arguments, in this order."""

from __future__ import annotations

from service.store.records import PLAY_FIELDS

SONG_COLUMNS = (
    "id, title, artist, album, isrc, external_id, duration_s, n_frames, content_sha256, "
    "fingerprint_count, created_at, source, file_sha256"
)
PROCESSED_COLUMNS = (
    "bucket, key, version_token, kind, result_json, created_at, claimed_at, published_at"
)
STREAM_COLUMNS = (
    "id, name, pts_epoch_s, wall_origin, max_end_s, last_sequence, last_key, last_segment_at,"
    " created_at"
)
SEGMENT_COLUMNS = (
    "sequence, key, start_s, duration_s, pts_s, n_frames, peaks, envelope_format, envelope_bands,"
    " envelope, sustained_peaks"
)
PLAY_COLUMNS = ", ".join(("id", "stream_id", *PLAY_FIELDS, "created_at", "updated_at"))

"""PostgreSQL's binary COPY format for the fingerprint delta, written with numpy.

https://www.postgresql.org/docs/current/sql-copy.html#id-1.9.3.55.9.4: a signature, flags and
header-extension length, then per row an int16 field count and per field an int32 byte length
followed by the value, all big-endian; an int16 -1 ends the stream.
"""

from __future__ import annotations

import numpy as np

_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_COPY_HEADER = _COPY_SIGNATURE + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_COPY_TRAILER = b"\xff\xff"


def _copy_row(*columns: str) -> np.dtype:
    """One binary COPY row of int4 columns: a field count, then (length, value) per column."""
    fields: list[tuple[str, str]] = [("fields", ">i2")]
    for column in columns:
        fields += [(f"{column}_len", ">i4"), (column, ">i4")]
    return np.dtype(fields)


_INSERT_ROW = _copy_row("hash", "song_id", "frame")


def encode_fingerprint_copy(song_id: int, hashes: np.ndarray, frames: np.ndarray) -> bytes:
    """Binary COPY payload of (hash, song_id, frame) rows, all int4."""
    rows = np.empty(len(hashes), dtype=_INSERT_ROW)
    rows["fields"] = 3
    rows["hash_len"] = rows["song_id_len"] = rows["frame_len"] = 4
    rows["hash"] = hashes
    rows["song_id"] = song_id
    rows["frame"] = frames
    return _COPY_HEADER + rows.tobytes() + _COPY_TRAILER

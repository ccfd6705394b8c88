"""The packed postings format of the PostgreSQL fingerprint index, encoded and decoded with numpy.

A posting is one stored fingerprint of a hash: (song_id, frame), each as a 24-bit big-endian
unsigned integer, 6 bytes in all. 24 bits hold 16.7 million song ids and 149 hours of frames
per song, and 6 bytes instead of two int4 (8) take a quarter off the biggest thing the catalogue
stores. Big-endian because the server writes the same bytes itself: `substring(int4send(x)
from 2)` is the low three bytes of an int4, so compaction packs postings in SQL without ever
shipping them to a client (see migrations/postgres/0004_postings.sql).

The lookup returns postings as a few flat byte strings (see `decode_lookup`), never a Python
object per row or per posting.
"""

from __future__ import annotations

import numpy as np

from service.arrays import unique_values
from service.store.records import Hits

POSTING_BYTES = 6
#: Largest song id and frame a posting can hold (24 bits each).
POSTING_MAX = (1 << 24) - 1

#: A postings row's header in the lookup: its hash and the byte length of its postings.
_HEAD = np.dtype([("hash", ">i4"), ("length", ">i4")])
#: A delta (not yet compacted) fingerprint in the lookup.
_DELTA = np.dtype([("hash", ">i4"), ("song_id", ">i4"), ("frame", ">i4")])


def encode_postings(song_ids: np.ndarray, frames: np.ndarray) -> bytes:
    """Pack postings; the inverse of `decode_postings`. Raises ValueError out of range."""
    song_ids = np.asarray(song_ids, dtype=np.int64)
    frames = np.asarray(frames, dtype=np.int64)
    for name, values in (("song id", song_ids), ("frame", frames)):
        if len(values) and (values.min() < 0 or values.max() > POSTING_MAX):
            raise ValueError(f"{name} outside 0..{POSTING_MAX} cannot be stored in a posting")
    out = np.empty((len(song_ids), POSTING_BYTES), dtype=np.uint8)
    for shift, column in ((16, 0), (8, 1), (0, 2)):
        out[:, column] = (song_ids >> shift) & 0xFF
        out[:, 3 + column] = (frames >> shift) & 0xFF
    return out.tobytes()


def decode_postings(payload: bytes | memoryview) -> tuple[np.ndarray, np.ndarray]:
    """(song_ids, frames) as int64 arrays from packed postings."""
    if len(payload) % POSTING_BYTES:
        raise ValueError("postings are not a whole number of 6-byte entries")
    n = len(payload) // POSTING_BYTES
    if n == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    # Each 24-bit field read as the big-endian uint32 that ends with it (one byte in front,
    # hence the leading pad byte), then masked: one strided pass per column. A lookup decodes
    # millions of postings per query, about ten times faster this way than byte by byte.
    padded = np.frombuffer(b"\0" + bytes(payload), dtype=np.uint8)
    song_ids, frames = (_words(padded, n, start).astype(np.int64) & POSTING_MAX for start in (0, 3))
    return song_ids, frames


def _words(padded: np.ndarray, n: int, start: int) -> np.ndarray:
    """`n` big-endian uint32 read every 6 bytes from byte `start` (unaligned, no copy)."""
    return np.ndarray((n,), dtype=">u4", buffer=padded, offset=start, strides=(POSTING_BYTES,))


def decode_lookup(
    heads: bytes, body: bytes, delta: bytes, tombstones: bytes
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hashes, song_ids, frames) as int64 from the four byte strings the lookup query returns.

    `heads` is (hash int4, byte length int4) per postings row and `body` those rows' postings
    concatenated in the same order; `delta` is (hash, song_id, frame) int4 triples of
    fingerprints not yet compacted; `tombstones` the int4 ids of deleted songs whose postings
    compaction has not purged yet, which are dropped here.
    """
    head = np.frombuffer(heads, dtype=_HEAD)
    lengths = head["length"].astype(np.int64)
    if lengths.sum() != len(body) or (lengths % POSTING_BYTES).any():
        raise ValueError("postings body does not match its headers")
    song_ids, frames = decode_postings(body)
    hashes = np.repeat(head["hash"].astype(np.int64), lengths // POSTING_BYTES)
    rows = np.frombuffer(delta, dtype=_DELTA)
    if len(rows):
        hashes = np.concatenate([hashes, rows["hash"].astype(np.int64)])
        song_ids = np.concatenate([song_ids, rows["song_id"].astype(np.int64)])
        frames = np.concatenate([frames, rows["frame"].astype(np.int64)])
    dead = np.frombuffer(tombstones, dtype=">i4")
    if len(dead):
        keep = ~np.isin(song_ids, dead.astype(np.int64))
        hashes, song_ids, frames = hashes[keep], song_ids[keep], frames[keep]
    return hashes, song_ids, frames


class SongFrames:
    """Song id -> length in frames, for the songs lookups have met.

    A song's length never changes and ids are never reused, so an entry never goes stale:
    the postings of a deleted song are filtered by tombstones before they get here. Memory
    is 4 bytes per id up to the largest id seen (400 kB at 100,000 songs).
    """

    def __init__(self) -> None:
        self._frames = np.full(1024, -1, dtype=np.int32)

    def missing(self, song_ids: np.ndarray) -> np.ndarray:
        """The distinct ids among `song_ids` whose length is unknown."""
        # Select before taking distinct values: sorting millions of hits to find the few unknown ids
        # cost more than the rest of the decoding.
        frames = self._frames
        if len(song_ids) and song_ids.max() < len(frames):
            return unique_values(song_ids[frames[song_ids] < 0])
        inside = song_ids < len(frames)
        unknown = song_ids[~inside]
        ids = song_ids[inside]
        return unique_values(np.concatenate([ids[frames[ids] < 0], unknown]))

    def add(self, song_ids: np.ndarray, n_frames: np.ndarray) -> None:
        if not len(song_ids):
            return
        top = int(song_ids.max())
        if top >= len(self._frames):
            grown = np.full(max(top + 1, len(self._frames) * 2), -1, dtype=np.int32)
            grown[: len(self._frames)] = self._frames
            self._frames = grown
        self._frames[song_ids] = n_frames

    def hits(self, hashes: np.ndarray, song_ids: np.ndarray, frames: np.ndarray) -> Hits:
        """Hits of the songs with a known length; ids still unknown (deleted meanwhile) drop."""
        if len(song_ids) and song_ids.max() < len(self._frames):
            lengths = self._frames[song_ids].astype(np.int64)
        else:
            inside = song_ids < len(self._frames)
            lengths = np.full(len(song_ids), -1, dtype=np.int64)
            lengths[inside] = self._frames[song_ids[inside]]
        keep = lengths >= 0
        if keep.all():
            # The usual case: skip four copies of arrays of millions of hits.
            return Hits(hashes=hashes, song_ids=song_ids, offsets=frames, song_frames=lengths)
        return Hits(
            hashes=hashes[keep],
            song_ids=song_ids[keep],
            offsets=frames[keep],
            song_frames=lengths[keep],
        )

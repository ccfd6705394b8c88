"""The packed postings format: round trips, limits, and the lookup's byte strings."""

from __future__ import annotations

import numpy as np
import pytest

from service.store.postings import (
    POSTING_MAX,
    SongFrames,
    decode_lookup,
    decode_postings,
    encode_postings,
)


def _be(*values: int) -> bytes:
    return b"".join(int(v).to_bytes(4, "big", signed=True) for v in values)


@pytest.mark.parametrize("n", [0, 1, 7, 10_000])
def test_postings_round_trip(n: int) -> None:
    rng = np.random.default_rng(n)
    songs = rng.integers(0, POSTING_MAX, n, endpoint=True)
    frames = rng.integers(0, POSTING_MAX, n, endpoint=True)
    if n:
        songs[0], frames[0] = POSTING_MAX, 0
    packed = encode_postings(songs, frames)
    assert len(packed) == 6 * n
    got_songs, got_frames = decode_postings(packed)
    assert got_songs.dtype == got_frames.dtype == np.int64
    np.testing.assert_array_equal(got_songs, songs)
    np.testing.assert_array_equal(got_frames, frames)


def test_postings_match_what_sql_packs() -> None:
    """substring(int4send(x) from 2): the low three bytes of an int4, big-endian."""
    assert encode_postings(np.array([0x010203]), np.array([0x0A0B0C])) == bytes(
        [1, 2, 3, 10, 11, 12]
    )


@pytest.mark.parametrize(("song", "frame"), [(-1, 0), (POSTING_MAX + 1, 0), (1, -1), (1, 1 << 24)])
def test_out_of_range_postings_are_refused(song: int, frame: int) -> None:
    with pytest.raises(ValueError):
        encode_postings(np.array([song]), np.array([frame]))


def test_decode_lookup_joins_postings_delta_and_drops_tombstones() -> None:
    body_a = encode_postings(np.array([1, 2, 3]), np.array([10, 20, 30]))
    body_b = encode_postings(np.array([2]), np.array([40]))
    heads = _be(-5, len(body_a), 2**31 - 1, len(body_b))
    delta = _be(-5, 4, 50) + _be(9, 2, 60)
    hashes, songs, frames = decode_lookup(heads, body_a + body_b, delta, _be(2))
    rows = sorted(zip(hashes.tolist(), songs.tolist(), frames.tolist(), strict=True))
    assert rows == [(-5, 1, 10), (-5, 3, 30), (-5, 4, 50)]
    empty = decode_lookup(b"", b"", b"", b"")
    assert all(len(a) == 0 for a in empty)
    with pytest.raises(ValueError):
        decode_lookup(heads, body_a, b"", b"")  # body shorter than its headers say


def test_song_frames_cache() -> None:
    cache = SongFrames()
    ids = np.array([3, 5000, 3, 7])
    np.testing.assert_array_equal(cache.missing(ids), [3, 7, 5000])
    cache.add(np.array([3, 5000]), np.array([100, 200]))
    np.testing.assert_array_equal(cache.missing(ids), [7])
    hits = cache.hits(np.array([1, 2, 3, 4]), ids, np.array([10, 20, 30, 40]))
    # Song 7 is unknown (deleted meanwhile): its hit drops, the others carry their length.
    assert hits.song_ids.tolist() == [3, 5000, 3]
    assert hits.song_frames.tolist() == [100, 200, 100]
    assert hits.offsets.tolist() == [10, 20, 30]


def test_postings_decode_from_any_buffer_at_the_24_bit_extremes() -> None:
    """The strided decoder reads unaligned words: check every byte lands in its field."""
    songs = np.array([0, POSTING_MAX, 0x010203, 1, 0xFF0000])
    frames = np.array([POSTING_MAX, 0, 0x0A0B0C, 0xFFFF, 1])
    packed = encode_postings(songs, frames)
    for payload in (packed, memoryview(packed), bytearray(packed)):
        got_songs, got_frames = decode_postings(payload)
        np.testing.assert_array_equal(got_songs, songs)
        np.testing.assert_array_equal(got_frames, frames)
    with pytest.raises(ValueError):
        decode_postings(packed[:-1])


def test_song_frames_cache_beyond_its_size_and_without_unknown_ids() -> None:
    cache = SongFrames()
    cache.add(np.array([1, 2]), np.array([10, 20]))
    ids = np.array([2, 1, 2, 1])
    assert len(cache.missing(ids)) == 0
    hits = cache.hits(np.array([5, 6, 7, 8]), ids, np.array([0, 1, 2, 3]))
    assert hits.song_frames.tolist() == [20, 10, 20, 10]
    assert hits.hashes.tolist() == [5, 6, 7, 8]
    far = np.array([1, 1 << 20, 2, 1 << 20])  # beyond the cache's array: unknown, once
    np.testing.assert_array_equal(cache.missing(far), [1 << 20])
    assert cache.hits(np.arange(4), far, np.arange(4)).song_ids.tolist() == [1, 2]

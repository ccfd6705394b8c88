"""Small array helpers shared by the hot paths.

numpy's default sort of integers is a vectorised quicksort that, on the 10^4-10^6 element
int arrays of a query, runs 10-30x faster than its stable sort (radix or timsort) and than
argsort (measured with numpy 2.4.6: 106k int64, 0.4 ms against 9 ms). The helpers here get
stable, index-returning results out of that one fast sort by packing the index into the low
bits of the key.
"""

from __future__ import annotations

import numpy as np


def bits(n: int) -> int:
    """Bits needed to hold the non-negative integer n (at least one)."""
    return max(int(n).bit_length(), 1)


def unique_values(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values of a 1-D array.

    Plain `np.unique` (numpy >= 2.3) goes through a hash table that is 10-100x slower than a
    sort on the int arrays of a query (150k hits: ~250 ms against ~3 ms), and these calls sit
    on every identification's path.
    """
    ordered = np.sort(values)
    return ordered[run_starts(ordered)]


def sort_with_order(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted key, `np.argsort(key, kind="stable")`) of an int array, both int64.

    (key - min) << index bits | index is sorted with the fast unstable sort: equal keys then
    order by index, which is what stability means, and the sorted keys come out of the same
    array without a gather. Keys too wide to share 63 bits with the index fall back to the
    stable argsort.
    """
    n = len(key)
    if n == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    lo = int(key.min())
    index_bits = bits(n - 1)
    if bits(int(key.max()) - lo) + index_bits > 63:
        order = np.argsort(key, kind="stable")
        return key[order].astype(np.int64), order
    packed = (key.astype(np.int64) - lo) << index_bits
    packed |= np.arange(n, dtype=np.int64)
    packed.sort()
    order = packed & ((1 << index_bits) - 1)
    packed >>= index_bits
    packed += lo
    return packed, order


def stable_order(key: np.ndarray) -> np.ndarray:
    """`np.argsort(key, kind="stable")` of an int array, as int64 (see sort_with_order)."""
    return sort_with_order(key)[1]


def run_starts(ordered: np.ndarray) -> np.ndarray:
    """Indices where a new value begins in a sorted array (0 included when non-empty)."""
    if len(ordered) == 0:
        return np.empty(0, dtype=np.int64)
    change = np.empty(len(ordered), dtype=bool)
    change[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=change[1:])
    return np.flatnonzero(change)


def sorted_positions(
    sorted_values: np.ndarray, wanted: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(whether each wanted value is in sorted_values, its index there where it is)."""
    if not len(sorted_values):
        return np.zeros(len(wanted), dtype=bool), np.zeros(len(wanted), dtype=np.int64)
    pos = np.minimum(np.searchsorted(sorted_values, wanted), len(sorted_values) - 1)
    return sorted_values[pos] == wanted, pos


def narrowest(key: np.ndarray) -> np.ndarray:
    """A non-negative int key as int32 when its values fit (sorting int32 takes about half
    the time of int64), else as it is."""
    return key.astype(np.int32) if len(key) and int(key.max()) < (1 << 31) else key


def pack_columns(*columns: np.ndarray) -> np.ndarray | None:
    """Non-negative int columns packed into one int64 key that sorts like their lexsort
    (first column most significant), or None if they do not fit in 63 bits."""
    widths = [bits(int(c.max())) if len(c) else 1 for c in columns]
    if sum(widths) > 63:
        return None
    key = np.zeros(len(columns[0]), dtype=np.int64)
    for column, width in zip(columns, widths, strict=True):
        key = key << width | column
    return key

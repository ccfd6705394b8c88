"""Running maximum over a rectangle of a 2-D array, far cheaper than scipy.ndimage's filter.

Peak picking asks, for every cell of the spectrogram band, for the maximum of a 17 x 25 cell
neighbourhood; scipy's per-element running max was the single largest cost of fingerprinting.
A maximum is exact, so computing it by doubling (max of pairs, of fours, ... then two
overlapping spans) with whole-array numpy operations gives the same values, bit for bit.
"""

from __future__ import annotations

import numpy as np


def _running_max_1d(x: np.ndarray, size: int, axis: int) -> np.ndarray:
    """max over [i - size // 2, i + size // 2] along `axis`; edges repeat the outer value."""
    if size <= 1:
        return x
    half = size // 2
    pad = [(0, 0)] * x.ndim
    pad[axis] = (half, size - 1 - half)
    y = np.pad(x, pad, mode="edge")
    y = np.moveaxis(y, axis, 0)
    n = x.shape[axis]
    # After each step y[i] is the max of the `width` values starting at i.
    width = 1
    while width * 2 <= size:
        y = np.maximum(y[:-width], y[width:])
        width *= 2
    out = np.maximum(y[:n], y[size - width : size - width + n])
    return np.moveaxis(out, 0, axis)


def running_max(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Equals scipy.ndimage.maximum_filter(x, size=size, mode="nearest") for odd sizes."""
    return np.ascontiguousarray(_running_max_1d(_running_max_1d(x, size[0], 0), size[1], 1))

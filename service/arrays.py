"""Small array helpers shared by the hot paths."""

from __future__ import annotations

import numpy as np


def unique_values(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values of a 1-D array.

    Plain `np.unique` (numpy >= 2.3) goes through a hash table that is 10-100x slower than a
    sort on the int arrays of a query (150k hits: ~250 ms against ~3 ms, measured with numpy
    2.4.6), and these calls sit on every identification's path.
    """
    ordered = np.sort(values, kind="stable")
    if len(ordered) == 0:
        return ordered
    distinct = np.empty(len(ordered), dtype=bool)
    distinct[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=distinct[1:])
    return ordered[distinct]

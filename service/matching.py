"""The hits a lookup returns: the store's answer and the matcher's input."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Hits:
    """Stored fingerprints that share a hash with the query; int arrays of shape (n,)."""

    hashes: np.ndarray
    song_ids: np.ndarray
    offsets: np.ndarray
    #: Length in frames of each hit's song (the chance model needs it per candidate song).
    song_frames: np.ndarray

    @classmethod
    def empty(cls) -> Hits:
        e = np.empty(0, dtype=np.int64)
        return cls(e, e.copy(), e.copy(), e.copy())

    def __len__(self) -> int:
        return len(self.hashes)

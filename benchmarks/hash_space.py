"""p(hash) of a catalogue's stored hashes, landmarks and (index format "fp2") triplets, for
synthetic songs with the statistics of real ones.

Both kinds share the postings' hash column: landmarks take values below 2^23, triplets carry
TRIPLET_TAG (1 << 30) above their 25-bit layout. The distribution is one array over
positions: landmarks' values first (position = hash), then triplets' (position = 2^23 + the
triplet's value without the tag). The mapping keeps the order of hash values, so postings
sorted by hash stay sorted by position. Under "fp1" there are no triplets and the array is
the landmarks' alone.

The distribution comes from half of the real songs only (`held_out` says which half does
not count); the large-catalogue benchmarks ask known clips of the other half.
"""

from __future__ import annotations

import hashlib

import numpy as np

from benchmarks.indexing import hash_distribution
from service.audio.triplets import (
    TRIPLET_FIELD_BITS,
    TRIPLET_HASH_SPACE,
    TRIPLET_TAG,
    unpack_triplet_hashes,
)

#: Landmark hash values lie below this (service/audio/hashes.py's 23-bit layout).
LANDMARK_SPACE = 1 << 23


def held_out(name: str) -> bool:
    """Whether the real song indexed as file `name` (benchmarks/latency_clips.indexed_name) is
    held out of the distribution synthetic songs are drawn from; the large-catalogue
    benchmarks ask known clips of held-out songs only.

    Drawn from every real song, the synthetic songs would repeat each real song's own rare
    hash values as often as the real songs hold them in all: at 100,000 songs a value held
    once by one real song of 123 comes back in some 800 synthetic ones, so the very hashes
    that find a clip's song look as common as chance, and the lookup budgets, which fetch the
    rarest hashes first, leave them out. A real catalogue holds a song's rare values only
    as often as other songs happen to: what a song outside the distribution meets
    (benchmarks/hash_budget.py measures both)."""
    return hashlib.sha256(name.encode()).digest()[0] % 2 == 1


def hash_position(hashes: np.ndarray) -> np.ndarray:
    """Position in the distribution of each stored hash value (int64)."""
    h = np.asarray(hashes, dtype=np.int64)
    return np.where(h & TRIPLET_TAG, LANDMARK_SPACE + (h & (TRIPLET_TAG - 1)), h)


def position_hash(positions: np.ndarray) -> np.ndarray:
    """The stored hash value at each position (the inverse of hash_position; int64)."""
    i = np.asarray(positions, dtype=np.int64)
    return np.where(i >= LANDMARK_SPACE, TRIPLET_TAG | (i - LANDMARK_SPACE), i)


def triplet_distribution(hashes: np.ndarray) -> np.ndarray:
    """p(triplet) over the TRIPLET_HASH_SPACE values, as hash_distribution does for landmarks:
    the stored triplets' own frequencies, and the Good-Turing share of values they never took
    (the share of triplets whose value occurs once) spread as the product of the marginals of
    the layout's fields (ratio cell, span cell, the two intervals, the anchor's band)."""
    h = np.asarray(hashes, dtype=np.int64) & (TRIPLET_TAG - 1)
    counts = np.bincount(h, minlength=TRIPLET_HASH_SPACE).astype(np.float64)
    ratio, span, d_b, d_c, band = unpack_triplet_hashes(h | TRIPLET_TAG)
    # Most significant first, as triplets._pack lays them out.
    fields = (band, d_c, d_b, span, ratio)
    product = np.ones(1)
    for field, width in zip(fields, TRIPLET_FIELD_BITS, strict=True):
        product = np.multiply.outer(product, np.bincount(field, minlength=1 << width) / len(h))
    product = product.reshape(-1)
    unseen = float(np.count_nonzero(counts == 1)) / len(h)
    p = (1.0 - unseen) * counts / counts.sum() + unseen * product / product.sum()
    return p / p.sum()


def stored_distribution(hashes: np.ndarray) -> np.ndarray:
    """p over positions (hash_position) of a catalogue's stored hashes: each kind's own
    distribution weighted by its share of them; the landmarks' alone when none is a
    triplet."""
    h = np.asarray(hashes, dtype=np.int64)
    tagged = (h & TRIPLET_TAG) != 0
    landmarks = hash_distribution(h[~tagged])
    if not tagged.any():
        return landmarks
    share = float(tagged.mean())
    return np.concatenate([(1.0 - share) * landmarks, share * triplet_distribution(h[tagged])])

"""Positions of landmark and triplet hashes in the synthetic catalogues' distribution."""

from __future__ import annotations

import numpy as np

from benchmarks.hash_space import (
    LANDMARK_SPACE,
    hash_position,
    position_hash,
    stored_distribution,
)
from service.audio.triplets import TRIPLET_HASH_SPACE, TRIPLET_TAG


def test_positions_round_trip_and_keep_the_order_of_hash_values() -> None:
    hashes = np.array(
        [
            0,
            5,
            LANDMARK_SPACE - 1,
            TRIPLET_TAG,
            TRIPLET_TAG | 7,
            TRIPLET_TAG | (TRIPLET_HASH_SPACE - 1),
        ]
    )
    positions = hash_position(hashes)
    assert positions.tolist() == [
        0, 5, LANDMARK_SPACE - 1, LANDMARK_SPACE, LANDMARK_SPACE + 7,
        LANDMARK_SPACE + TRIPLET_HASH_SPACE - 1,
    ]  # fmt: skip
    assert np.all(np.diff(positions) > 0)
    assert position_hash(positions).tolist() == hashes.tolist()


def test_landmarks_alone_give_the_landmark_space() -> None:
    rng = np.random.default_rng(1)
    p = stored_distribution(rng.integers(0, LANDMARK_SPACE, 10_000))
    assert len(p) == LANDMARK_SPACE
    assert np.isclose(p.sum(), 1.0)


def test_triplets_take_their_share_of_the_stored_hashes() -> None:
    rng = np.random.default_rng(2)
    landmarks = rng.integers(0, LANDMARK_SPACE, 7_000)
    triplets = TRIPLET_TAG | rng.integers(0, TRIPLET_HASH_SPACE, 3_000)
    # One triplet value stored 500 times: the most frequent value of the catalogue.
    frequent = np.full(500, TRIPLET_TAG | 12_345)
    p = stored_distribution(np.concatenate([landmarks, triplets, frequent]))
    assert len(p) == LANDMARK_SPACE + TRIPLET_HASH_SPACE
    assert np.isclose(p.sum(), 1.0)
    assert np.isclose(p[LANDMARK_SPACE:].sum(), 3_500 / 10_500)
    assert int(np.argmax(p)) == hash_position(np.array([TRIPLET_TAG | 12_345]))[0]

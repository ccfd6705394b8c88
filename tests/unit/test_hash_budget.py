"""The hash-budget benchmark's coverage rule: a lookup takes a clip's hashes rarest first
until the budget's postings are spent."""

from __future__ import annotations

import numpy as np

from benchmarks.hash_budget import budget_reach


def test_the_rarest_hashes_are_fetched_until_the_budget_is_spent() -> None:
    postings = np.array([500.0, 10.0, 40.0, 2_000.0, 60.0])
    song = np.array([True, False, True, True, True])
    # Rarest first: 10, 40, 60 (110 postings), then 500 (610), then 2,000 (2,610).
    assert budget_reach(postings, song, 100) == 1
    assert budget_reach(postings, song, 110) == 2
    assert budget_reach(postings, song, 610) == 3
    assert budget_reach(postings, song, 5_000) == 4
    assert budget_reach(postings, song, 5) == 0

"""The speed grid searched coarse to fine, against a real catalogue."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from service.audio.hashes import landmark_hashes
from service.audio.params import DEFAULT_PARAMS
from service.audio.peaks import Peaks, thin_peaks
from service.core.identify.lookups import HitCache
from service.core.identify.speed_search import search_speeds
from service.match import MatchParams, find_matches, inconclusive, speed_variants
from service.store import Hits, Store
from tests.integration.test_store import make_song, opened
from tests.unit.test_matching import _played_at, _random_peaks

P = DEFAULT_PARAMS


async def _a_song_and_its_clip_3_percent_fast(store: Store) -> Peaks:
    """Index one random song; a clip of it played 3 % fast, short enough (1.3 s) that its
    chance probability stays finite."""
    song = _random_peaks(9, 40)
    fp = landmark_hashes(song, P)
    await store.add_song(make_song(fp, "a" * 64, n_frames=int(song.frames.max()) + 1))
    return _played_at(song, 1.03, frames=40)


def test_a_match_at_another_speed_pays_for_every_search_of_the_grid(sqlite_url: str) -> None:
    """The answer is the best of up to three searches of the grid, so a match at a speed
    other than the clip's own pays the speed calibration three times (log10 3 more than one
    search of the same variants and hits would charge)."""

    async def run() -> None:
        async with opened(sqlite_url) as store:
            clip = await _a_song_and_its_clip_3_percent_fast(store)
            mp = MatchParams()
            found = await search_speeds(HitCache(store), clip, None, P, mp)
            assert found and found[0].grid_speed == pytest.approx(1.03)
            assert not inconclusive(found, mp)  # settled by the first, coarse search
            grid = mp.speed_grid()
            coarse = speed_variants(thin_peaks(clip, P), grid, P)
            hits = await store.lookup(np.concatenate([v.hashes for v in coarse]))
            # Charged for every speed and pitch-only twin searched (49), not the 25 voted on.
            once = find_matches(coarse, hits, P, mp, speeds_tried=2 * len(grid) - 1)[0]
            assert np.isfinite(once.chance_log10)
            assert found[0].score == once.score
            assert found[0].chance_log10 == pytest.approx(once.chance_log10 + math.log10(3))

    asyncio.run(run())


def test_the_grid_keeps_a_budget_of_its_own(sqlite_url: str) -> None:
    """Every speed of the grid shares its lookup, so the grid looks up under
    MatchParams.max_hits_speed_grid (per 10 s of clip), not the cache's budget for one
    speed's lookup."""

    async def run() -> None:
        async with opened(sqlite_url) as store:
            clip = await _a_song_and_its_clip_3_percent_fast(store)
            budgets: list[int | None] = []

            class Recording:
                async def lookup(
                    self,
                    hashes: np.ndarray,
                    max_postings: int | None = None,
                    max_hits: int | None = None,
                ) -> Hits:
                    budgets.append(max_hits)
                    return await store.lookup(hashes, max_postings, max_hits)

            mp = MatchParams(max_hits_per_lookup=1_000, max_hits_speed_grid=3_000_000)
            cache = HitCache(Recording(), max_hits=1_000)  # type: ignore[arg-type]
            found = await search_speeds(cache, clip, None, P, mp)
            assert found and found[0].grid_speed == pytest.approx(1.03)
            # A 1.3-s clip gets a 10-s clip's budget (never less).
            assert budgets and set(budgets) == {3_000_000}

    asyncio.run(run())

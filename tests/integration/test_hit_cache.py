"""Tiered lookups against a real catalogue: each hash is fetched once per query."""

from __future__ import annotations

import asyncio

import numpy as np

from service.audio.hashes import Fingerprints
from service.core.identify.lookups import HitCache
from service.store import Hits, Store
from tests.integration.test_store import make_fingerprints, make_song, opened


class CountingStore:
    """A real store whose lookups are recorded (what was asked, in order)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.asked: list[np.ndarray] = []

    async def lookup(
        self, hashes: np.ndarray, max_postings: int | None = None, max_hits: int | None = None
    ) -> Hits:
        self.asked.append(np.sort(hashes))
        return await self.store.lookup(hashes, max_postings, max_hits)


def _left_out(hits: Hits) -> dict[int, int]:
    return dict(zip(hits.left_out.hashes.tolist(), hits.left_out.postings.tolist(), strict=True))


def _rows(hits: Hits) -> set[tuple[int, int, int]]:
    return set(
        zip(hits.hashes.tolist(), hits.song_ids.tolist(), hits.offsets.tolist(), strict=True)
    )


def _twelve_six_two() -> Fingerprints:
    """One song's fingerprints: hash 1 stored 12 times, hash 2 six times, hash 3 twice."""
    frames = np.arange(0, 60, 3, dtype=np.int32)
    hashes = np.repeat(np.array([1, 2, 3], np.int32), [12, 6, 2])
    return Fingerprints(hashes, np.concatenate([frames[:12], frames[:6], frames[:2]]))


def test_each_tier_fetches_only_new_hashes_and_sees_all_hits(store_url: str) -> None:
    async def run() -> None:
        rng = np.random.default_rng(7)
        async with opened(store_url) as store:
            fp = make_fingerprints(rng, 3000, 0, 400)
            await store.add_song(make_song(fp, "a" * 64))
            counting = CountingStore(store)
            cache = HitCache(counting)  # type: ignore[arg-type]
            first = await cache.hits_for(np.array([5, 1, 5, 9], dtype=np.int32))
            second = await cache.hits_for(np.array([9, 12, 1, 30], dtype=np.int32))
            again = await cache.hits_for(np.array([12, 30], dtype=np.int32))
            assert [a.tolist() for a in counting.asked] == [[1, 5, 9], [12, 30]]
            assert _rows(first) == _rows(await store.lookup(np.array([1, 5, 9], np.int32)))
            everything = _rows(await store.lookup(np.array([1, 5, 9, 12, 30], np.int32)))
            assert _rows(second) == everything == _rows(again)
            assert len(second) == len(everything)  # no hit fetched twice

    asyncio.run(run())


def test_a_higher_cap_asks_again_for_the_hashes_a_lower_one_left_out(store_url: str) -> None:
    """The first tier looks up under a tight frequent-hash cap, later tiers under a looser
    one: the hashes the tight cap left out must then be fetched, and nothing else again."""

    async def run() -> None:
        async with opened(store_url) as store:
            await store.add_song(make_song(_twelve_six_two(), "c" * 64))
            counting = CountingStore(store)
            cache = HitCache(counting)  # type: ignore[arg-type]
            tight = await cache.hits_for(np.array([1, 2, 3], np.int32), max_postings=5)
            assert sorted(set(tight.hashes.tolist())) == [3]
            same = await cache.hits_for(np.array([1, 2, 3], np.int32), max_postings=5)
            assert len(counting.asked) == 1 and _rows(same) == _rows(tight)
            looser = await cache.hits_for(np.array([1, 2, 3, 4], np.int32), max_postings=8)
            assert [a.tolist() for a in counting.asked] == [[1, 2, 3], [1, 2, 4]]
            assert sorted(set(looser.hashes.tolist())) == [2, 3]
            everything = await cache.hits_for(np.array([1, 2, 3], np.int32), max_postings=None)
            assert _rows(everything) == _rows(await store.lookup(np.array([1, 2, 3], np.int32)))
            assert len(everything) == 20  # each stored fingerprint once

    asyncio.run(run())


def test_each_hash_remembers_the_cap_it_was_asked_under(store_url: str) -> None:
    """The speed grid looks its other speeds up under a tighter cap than the clip's own speed
    before it: a hash first asked under the tighter cap and left out must still be fetched
    when a looser cap asks for it, while hashes fetched under the looser one are not asked
    again under the tighter."""

    async def run() -> None:
        async with opened(store_url) as store:
            await store.add_song(make_song(_twelve_six_two(), "d" * 64))
            counting = CountingStore(store)
            cache = HitCache(counting)  # type: ignore[arg-type]
            deep = await cache.hits_for(np.array([1], np.int32), max_postings=20)
            assert len(deep) == 12
            tight = await cache.hits_for(np.array([1, 2, 3], np.int32), max_postings=4)
            assert [a.tolist() for a in counting.asked] == [[1], [2, 3]]
            assert sorted(set(tight.hashes.tolist())) == [1, 3]  # 1 kept from the deep ask
            again = await cache.hits_for(np.array([1, 2, 3], np.int32), max_postings=20)
            assert [a.tolist() for a in counting.asked] == [[1], [2, 3], [2]]
            assert _rows(again) == _rows(await store.lookup(np.array([1, 2, 3], np.int32)))
            assert len(again) == 20

    asyncio.run(run())


def test_a_larger_budget_asks_again_for_the_hashes_a_smaller_one_left_out(
    store_url: str,
) -> None:
    """The first tier looks up under a small budget of postings, the second under the full
    one, possibly at the same cap (a small catalogue's caps all sit at the floor): the hashes
    the small budget left out, the most frequent first, must then be fetched."""

    async def run() -> None:
        async with opened(store_url) as store:
            await store.add_song(make_song(_twelve_six_two(), "e" * 64))
            counting = CountingStore(store)
            cache = HitCache(counting, max_hits=100)  # type: ignore[arg-type]
            small = await cache.hits_for(np.array([1, 2, 3], np.int32), 20, max_hits=8)
            assert sorted(set(small.hashes.tolist())) == [2, 3]  # 2 + 6 postings fit in 8
            # What the small budget left out is known, for the chance model to count.
            assert _left_out(small) == {1: 12} and small.left_out.catalogue_frames == 6000
            full = await cache.hits_for(np.array([1, 2, 3], np.int32), 20)
            assert [a.tolist() for a in counting.asked] == [[1, 2, 3], [1]]
            assert _rows(full) == _rows(await store.lookup(np.array([1, 2, 3], np.int32)))
            assert len(full) == 20
            assert _left_out(full) == {}  # fetched since: nothing left out any more

    asyncio.run(run())


def test_what_the_budgets_left_out_is_each_hashs_latest_lookup(store_url: str) -> None:
    """Hashes the budget left out accumulate over a query's lookups, each as its latest lookup
    found it: fetched since, or over a higher cap's reach, it is no longer left out; a hash
    the cap left out never is (the chance model is calibrated with the caps)."""

    async def run() -> None:
        async with opened(store_url) as store:
            await store.add_song(make_song(_twelve_six_two(), "k" * 64))
            cache = HitCache(store, max_hits=100)
            capped = await cache.hits_for(np.array([1, 2, 3], np.int32), 5, max_hits=1)
            assert len(capped) == 0 and _left_out(capped) == {3: 2}  # 1 and 2 over the cap
            looser = await cache.hits_for(np.array([1, 2, 3], np.int32), 10, max_hits=3)
            assert sorted(set(looser.hashes.tolist())) == [3]
            assert _left_out(looser) == {2: 6}
            other = await cache.hits_for(np.array([1], np.int32), 20, max_hits=3)
            assert _left_out(other) == {1: 12, 2: 6}
            full = await cache.hits_for(np.array([1, 2], np.int32), 20)
            assert len(full) == 20 and _left_out(full) == {}

    asyncio.run(run())


def test_asking_again_refetches_what_a_shared_budget_left_out(store_url: str) -> None:
    """The speed grid's lookup shares one budget among all its speeds; the speed focus then
    asks a few speeds' hashes again under the same budget, now shared by fewer hashes: those
    left out before are fetched, those already fetched are not, whatever their cap and budget
    were."""

    async def run() -> None:
        async with opened(store_url) as store:
            await store.add_song(make_song(_twelve_six_two(), "f" * 64))
            counting = CountingStore(store)
            cache = HitCache(counting, max_hits=14)  # type: ignore[arg-type]
            shared = await cache.hits_for(np.array([1, 2, 3], np.int32))
            assert sorted(set(shared.hashes.tolist())) == [2, 3]  # 2 + 6 fit in 14, 12 more not
            same = await cache.hits_for(np.array([1, 3], np.int32))
            assert len(counting.asked) == 1 and _rows(same) == _rows(shared)
            focused = await cache.hits_for(np.array([1, 3], np.int32), again=True)
            assert [a.tolist() for a in counting.asked] == [[1, 2, 3], [1]]  # 12 fit in 14
            assert _rows(focused) == _rows(await store.lookup(np.array([1, 2, 3], np.int32)))
            assert len(focused) == 20

    asyncio.run(run())


def test_only_the_hashes_a_budget_left_out_are_asked_again(store_url: str) -> None:
    """A hash that came back empty is asked again under a larger budget, or with `again`,
    only if the store said its budget left it out: one over the cap or not stored would
    return nothing new, however tight the budget was."""

    async def run() -> None:
        async with opened(store_url) as store:
            await store.add_song(make_song(_twelve_six_two(), "g" * 64))
            counting = CountingStore(store)
            cache = HitCache(counting, max_hits=1000)  # type: ignore[arg-type]
            # 2 + 6 postings fit in 8, 8 more would not: a tight budget that left nothing out.
            tight = await cache.hits_for(np.array([1, 2, 3, 4], np.int32), 8, max_hits=8)
            assert sorted(set(tight.hashes.tolist())) == [2, 3]  # 1 over the cap, 4 absent
            assert _left_out(tight) == {}
            full = await cache.hits_for(np.array([1, 2, 3, 4], np.int32), 8)
            focused = await cache.hits_for(np.array([1, 4], np.int32), 8, again=True)
            assert len(counting.asked) == 1
            assert _rows(full) == _rows(focused) == _rows(tight)
            # 2 postings fit in 5, 6 more would not: hash 2 alone is asked again.
            left = HitCache(counting, max_hits=1000)  # type: ignore[arg-type]
            small = await left.hits_for(np.array([1, 2, 3, 4], np.int32), 8, max_hits=5)
            assert _left_out(small) == {2: 6}
            await left.hits_for(np.array([1, 2, 3, 4], np.int32), 8)
            assert [a.tolist() for a in counting.asked[1:]] == [[1, 2, 3, 4], [2]]

    asyncio.run(run())


def test_a_hash_is_judged_by_its_latest_lookup(store_url: str) -> None:
    """A hash left out by a budget under a loose cap, then asked again under a tighter one
    and found over it, was never fetched under the loose cap: that cap asks it again. And
    one over a tight cap, then left out by a budget under a looser one, is asked again with
    `again` even though its first lookup left nothing out."""

    async def run() -> None:
        async with opened(store_url) as store:
            await store.add_song(make_song(_twelve_six_two(), "h" * 64))
            counting = CountingStore(store)
            cache = HitCache(counting, max_hits=1000)  # type: ignore[arg-type]
            await cache.hits_for(np.array([1], np.int32), 20, max_hits=5)  # left out
            await cache.hits_for(np.array([1], np.int32), 8, again=True)  # over the cap
            loose = await cache.hits_for(np.array([1], np.int32), 20)
            assert [a.tolist() for a in counting.asked] == [[1], [1], [1]]
            assert len(loose) == 12
            other = HitCache(counting, max_hits=1000)  # type: ignore[arg-type]
            await other.hits_for(np.array([2], np.int32), 4)  # over the cap
            left = await other.hits_for(np.array([2], np.int32), 8, max_hits=5)
            assert _left_out(left) == {2: 6}
            await other.hits_for(np.array([2], np.int32), 8, max_hits=5)  # nothing new
            assert [a.tolist() for a in counting.asked[3:]] == [[2], [2]]
            again = await other.hits_for(np.array([2], np.int32), 8, max_hits=5, again=True)
            assert [a.tolist() for a in counting.asked[3:]] == [[2], [2], [2]]
            assert _left_out(again) == {2: 6}

    asyncio.run(run())


def test_completing_songs_fetches_their_left_out_postings_a_budget_at_a_time(
    store_url: str,
) -> None:
    """The songs a query completes get every left-out posting of the hashes it names, the
    other songs none; the left-out hashes are asked a budget of postings at a time, the
    rarest first; the table says which songs hold which hashes whole; and a hash fetched
    whole later brings no posting twice."""

    async def run() -> None:
        async with opened(store_url) as store:
            a_id = (await store.add_song(make_song(_twelve_six_two(), "m" * 64)))[0].id
            await store.add_song(make_song(_twelve_six_two(), "n" * 64))
            counting = CountingStore(store)
            cache = HitCache(counting, max_hits=13)  # type: ignore[arg-type]
            # 4 postings of hash 3 fit in 13; hash 2 (12) and hash 1 (24) are left out.
            small = await cache.hits_for(np.array([1, 2, 3], np.int32), 30)
            assert _left_out(small) == {1: 24, 2: 12}
            done = await cache.complete(np.array([1, 2, 3, 9]), np.array([a_id]))
            assert done is not None
            assert [x.tolist() for x in counting.asked[1:]] == [[2], [1]]  # 12, then 24
            mine = _rows(done) - _rows(small)
            assert {(h, s) for h, s, _ in mine} == {(1, a_id), (2, a_id)}
            assert len(done) == len(small) + 18
            assert _left_out(done) == {1: 24, 2: 12}  # still left out for song b
            ((songs, hashes),) = done.left_out.completed
            assert songs.tolist() == [a_id] and hashes.tolist() == [1, 2]
            # Completed once: asked again, nothing is fetched and nothing counts twice.
            assert await cache.complete(np.array([1, 2]), np.array([a_id])) is None
            assert len(counting.asked) == 3
            # Asked whole under a larger budget: each posting once.
            whole = await cache.hits_for(np.array([1, 2, 3], np.int32), 30, max_hits=100)
            assert _rows(whole) == _rows(await store.lookup(np.array([1, 2, 3], np.int32)))
            assert len(whole) == 40 and _left_out(whole) == {}

    asyncio.run(run())


def test_dropped_completions_leave_the_budgeted_hits(store_url: str) -> None:
    """Before lookups under a tighter cap (the speed grid), what complete() fetched is
    forgotten: the hits and the table of what was left out are those of the budgeted lookups
    alone, so no variant's cap is judged on a few songs' rows of a hash."""

    async def run() -> None:
        async with opened(store_url) as store:
            a_id = (await store.add_song(make_song(_twelve_six_two(), "p" * 64)))[0].id
            await store.add_song(make_song(_twelve_six_two(), "q" * 64))
            cache = HitCache(store, max_hits=13)
            small = await cache.hits_for(np.array([1, 2, 3], np.int32), 30)
            assert await cache.complete(np.array([1, 2]), np.array([a_id])) is not None
            cache.drop_completions()
            after = await cache.hits_for(np.array([1, 2, 3], np.int32), 30)
            assert _rows(after) == _rows(small) and len(after) == len(small)
            assert after.left_out.completed == () and _left_out(after) == {1: 24, 2: 12}

    asyncio.run(run())


def test_a_hash_over_a_tighter_cap_stays_left_out_under_the_looser_one(store_url: str) -> None:
    """The speed grid asks under a tighter cap, and a larger budget, hashes the second tier
    left out under its looser cap: one now over the tighter cap was neither fetched nor left
    out by that lookup, so it is still left out under the looser cap, and the variants of
    that cap still count its postings as chance votes."""

    async def run() -> None:
        async with opened(store_url) as store:
            await store.add_song(make_song(_twelve_six_two(), "r" * 64))
            cache = HitCache(store, max_hits=1000)
            deep = await cache.hits_for(np.array([1, 2], np.int32), 20, max_hits=5)
            assert _left_out(deep) == {1: 12, 2: 6}
            tight = await cache.hits_for(np.array([1, 2], np.int32), 8, max_hits=100)
            assert sorted(set(tight.hashes.tolist())) == [2]  # fetched: no longer left out
            assert _left_out(tight) == {1: 12}  # over 8, still left out under 20

    asyncio.run(run())

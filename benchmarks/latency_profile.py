"""The identify pipeline of the "fp1" index format in one process, a timer per stage (decode,
fingerprint, lookup SQL round trip, decoding the hits, voting, speed variants), to say where a
request's milliseconds go; beside it the reference matcher on the same hits, and the first
tier's lookup without the frequent-hash cap and with the first tier's budget."""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from benchmarks import reference_matching
from benchmarks.latency_clips import Clip
from service.audio.decode import decode_audio
from service.audio.hashes import landmark_hashes
from service.audio.params import DEFAULT_PARAMS
from service.audio.peaks import find_peaks_and_sustained, thin_peaks
from service.core.identify.lookups import HitCache, first_tier_budget, postings_caps
from service.match import (
    MatchParams,
    QueryVariant,
    find_matches,
    inconclusive,
    speed_search_needed,
    speed_variants,
    variant_of,
)
from service.memory import keep_freed_memory
from service.settings import Settings
from service.store import Hits
from service.store.postgres import LOOKUP_SQL, PostgresStore, lookup_limits
from service.store.postings import decode_lookup

STAGES = ("decode", "fingerprint", "lookup_sql", "hit_decode", "voting", "speed_variants")
#: Timed beside the stages, not part of them: the reference matcher on the same hits.
REFERENCE = "voting_reference"


async def _timed_lookup(
    store: PostgresStore,
    hashes: np.ndarray,
    t: dict[str, float],
    max_postings: int | None,
    max_hits: int | None,
) -> Hits:
    wanted = np.unique(np.asarray(hashes, dtype=np.int32))
    if len(wanted) == 0:
        return Hits.empty()
    async with store._connection() as conn:
        started = time.perf_counter()
        row = await conn.fetchrow(
            LOOKUP_SQL, wanted.tolist(), *lookup_limits(max_postings, max_hits)
        )
        fetched = time.perf_counter()
        found, song_ids, frames = decode_lookup(
            row["heads"], row["body"], row["delta"], row["tombstones"]
        )
        hits = store._song_frames.hits(found, song_ids, frames)
        decoded = time.perf_counter()
    t["lookup_sql"] += (fetched - started) * 1000
    t["hit_decode"] += (decoded - fetched) * 1000
    t["hits"] += len(found)
    t["lookup_bytes"] += len(row["body"])
    return hits


def _reference_variant(v: QueryVariant, ordered: np.ndarray) -> reference_matching.QueryVariant:
    """`v` for the reference matcher, which has no per-variant cap: the same pairs come from
    leaving the variant's hashes above its cap out of it (`ordered`: the hits' hashes, sorted)."""
    # The stage profile builds speed variants of the whole clip only: never pitch-only ones,
    # never ones that start into the clip.
    assert not v.pitch_only and v.start_s == 0.0
    fields = {
        k: x for k, x in vars(v).items() if k not in ("max_postings", "pitch_only", "start_s")
    }
    if v.max_postings is not None:
        counts = np.searchsorted(ordered, v.hashes, "right") - np.searchsorted(ordered, v.hashes)
        kept = counts <= v.max_postings
        for k in ("hashes", "offsets", "query_frames"):
            fields[k] = fields[k][kept]
    return reference_matching.QueryVariant(**fields)


class _TimedStore:
    """Just enough of a Store for HitCache, timing each lookup into `t`."""

    def __init__(self, store: PostgresStore, t: dict[str, float]) -> None:
        self._store, self._t = store, t

    async def lookup(
        self, hashes: np.ndarray, max_postings: int | None = None, max_hits: int | None = None
    ) -> Hits:
        return await _timed_lookup(self._store, hashes, self._t, max_postings, max_hits)


async def stage_profile(url: str, clips: list[Clip]) -> list[dict[str, float]]:
    """service.core.identify's identify (tiers, HitCache) with a timer per stage, per clip."""
    keep_freed_memory()  # as the service does (service/memory.py)
    settings = Settings(database_url=url)
    match_params = MatchParams(
        min_confidence=settings.min_confidence, max_matches=settings.max_matches
    )
    params = DEFAULT_PARAMS
    query_params = params.for_queries()
    store = PostgresStore(url, params.version, pool_min_size=1, pool_max_size=1)
    await store.open()
    rows = []
    try:
        # Warm the connection and the prepared statement (open() has read the song lengths).
        await store.lookup(np.arange(0, 1 << 23, 1024, dtype=np.int32))
        caps = await postings_caps(store, match_params)
        for clip in clips:
            t = dict.fromkeys((*STAGES, REFERENCE, "hits", "lookup_bytes", "tiers"), 0.0)
            t["reference_differs"] = 0.0
            started = time.perf_counter()
            audio = decode_audio(clip.path, query_params.sample_rate_hz)
            decoded = time.perf_counter()
            # As analysis.analyse_query: the second tier's peaks are picked up front.
            peaks, sustained = find_peaks_and_sustained(audio.samples, query_params)
            dense = landmark_hashes(sustained, query_params)
            sparse = landmark_hashes(thin_peaks(peaks, params), params)
            t["decode"] = (decoded - started) * 1000
            t["fingerprint"] = (time.perf_counter() - decoded) * 1000
            cache = HitCache(
                _TimedStore(store, t),  # type: ignore[arg-type]
                match_params.max_hits_per_lookup,
            )

            async def match(
                variants: list,
                t: dict[str, float] = t,
                cache=cache,
                cap=caps.deep,
                budget: int | None = None,
            ) -> list:
                hits = await cache.hits_for(
                    np.concatenate([v.hashes for v in variants]), cap, budget
                )

                ordered = np.sort(hits.hashes)
                reference_variants = [_reference_variant(v, ordered) for v in variants]

                def current() -> list:
                    return find_matches(variants, hits, params, match_params)

                def previous() -> list:
                    return reference_matching.find_matches(
                        reference_variants,
                        reference_matching.Hits(
                            hits.hashes, hits.song_ids, hits.offsets, hits.song_frames
                        ),
                        params,
                        reference_matching.MatchParams(
                            **{
                                f.name: getattr(match_params, f.name)
                                for f in dataclasses.fields(reference_matching.MatchParams)
                            }
                        ),
                    )

                # Alternate which matcher runs first: on millions of hits the first pays
                # for fresh memory the second may find mapped already.
                runs = [("voting", current), (REFERENCE, previous)]
                for stage, run in runs if len(rows) % 2 == 0 else runs[::-1]:
                    voting = time.perf_counter()
                    result = run()
                    t[stage] += (time.perf_counter() - voting) * 1000
                    if stage == "voting":
                        found = result
                    else:
                        reference = result
                # On the reference's fields: the current Match has more (grid_speed).
                if len(reference) != len(found) or any(
                    vars(m) != {k: vars(f)[k] for k in vars(m)}
                    for m, f in zip(reference, found, strict=True)
                ):
                    t["reference_differs"] += 1
                t["tiers"] += 1
                return found

            budget = first_tier_budget(match_params, audio.duration_s)
            matches = await match([variant_of(sparse)], cap=caps.first, budget=budget)
            if inconclusive(matches, match_params):
                matches = await match([variant_of(dense)])
            if speed_search_needed(matches, match_params):
                started = time.perf_counter()
                variants = speed_variants(
                    peaks, match_params.speed_grid(), query_params, caps.speed
                )
                t["speed_variants"] = (time.perf_counter() - started) * 1000
                await match(variants, cap=caps.speed)
            # Side by side: the first tier again without the frequent-hash cap (lookup SQL,
            # hit decoding and voting), and whether its answer is the same song.
            started = time.perf_counter()
            raw = await store.lookup(sparse.hashes)
            found_raw = find_matches([variant_of(sparse)], raw, params, match_params)
            t["uncapped_ms"] = (time.perf_counter() - started) * 1000
            t["uncapped_hits"] = float(len(raw))
            # With the cap, and with the cap and the first tier's budget: alternately first
            # and second, as the second finds memory and pages the first has just touched.
            found: dict[str, list] = {}
            for kind, budget_of_kind in (("capped", None), ("budget", budget))[
                :: 1 if len(rows) % 2 == 0 else -1
            ]:
                started = time.perf_counter()
                hits = await store.lookup(sparse.hashes, caps.first, budget_of_kind)
                found[kind] = find_matches([variant_of(sparse)], hits, params, match_params)
                t[f"{kind}_ms"] = (time.perf_counter() - started) * 1000
                t[f"{kind}_hits"] = float(len(hits))
            found_capped, found_budgeted = found["capped"], found["budget"]
            t["alternated"] = 1.0
            top = [f[0].song_id if f else None for f in (found_raw, found_capped, found_budgeted)]
            t["cap_same_top"] = float(top[0] == top[1])
            t["budget_same_top"] = float(top[2] == top[1])
            t["budget_settles"] = float(not inconclusive(found_budgeted, match_params))
            t["condition"] = clip.condition  # type: ignore[assignment]
            rows.append(t)
    finally:
        await store.close()
    return rows

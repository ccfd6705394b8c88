"""The tier ladder: how a clip, or a window of a stream or of a long file, becomes matches.

Each tier runs only when the one before is not conclusive:

1. The query's landmarks thinned to the index's density: the pairs a clean copy of the song was
   indexed with, a third of the query's hashes, so a third of the lookup, and at most
   MatchParams.max_hits_first_tier postings of them per 10 s, the rarest hashes first. Nearly
   every real query ends here.
2. Under the "fp2" index format, the triplets of those peaks (service/audio/triplets.py),
   which do not change with speed, tempo or pitch: one lookup, voted under every time scale
   of MatchParams.triplet_scales(), finds a clip played up to +-10 % off its song's speed,
   and there is no speed grid (tier 4).
3. The query's denser landmarks, picked for noise (noise hides some of the song's peaks; its
   held notes are among the steadiest of the rest: peaks.find_sustained_peaks); then, if that
   settles nothing either, the same from the query analysed again at its other hop phases
   (FingerprintParams.query_hop_phases; only a short clip, whose samples analyse_query kept):
   under heavy noise each start of the frame grid keeps other peaks of the song. One lookup, a
   variant per phase, each match charged MatchParams.calibration_log10_phase.
4. Under "fp1" only, the speed grid (speed_search.py): the query's landmarks re-hashed under
   candidate speeds, coarse to fine, under the tighter MatchParams.frequent_hash_factor_speed
   cap; also when the match the first tiers settled on drifts by more than a grid step
   (match.speed_search_needed), and that match then competes with the grid's.

Each tier looks up only hashes not fetched yet (lookups.HitCache); the triplets and the other
hop phases fetch through caches of their own, dropped when they are done. Then the band envelopes
(envelope_confirm.py): matches that beat chance too narrowly to be final are dropped if their
songs' envelopes do not follow the query; when no match is left, the second tier's most
improbable candidates, of the query's own analysis and of its other phases (four aligned frames
make one: MatchParams.candidate_min_score), are checked against theirs: noise that leaves too
few landmarks still leaves the rhythm.

A clip and a window climb the same ladder; what differs is said by the caller:
- which HitCache each tier fetches through (a clip's tiers share one; the windows of a batch
  share the first tier's lookup, under the budget of as many clips, and each window's deeper
  tiers fetch through a cache of its own, so that what a lookup holds, and with it a process's
  memory, stays that of one clip whatever the batch or the file's length);
- `order_hits`, which puts each lookup's hits in an order that does not depend on which
  queries shared it (a stream's log must not depend on the order its segments came in);
- whether a query may go past the first tier at all (`TierQuery.deep`: a stream's window
  whose audio has not all arrived yet is matched again when it has), and whether it has
  samples to analyse at other hop phases (`TierQuery.samples`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from service.audio.hashes import Fingerprints, landmark_hashes
from service.audio.params import FingerprintParams
from service.audio.peaks import Peaks, sustained_peaks_at_phases, thin_peaks
from service.audio.triplets import triplet_hashes
from service.core.identify.completion import candidates_to_complete, completed_search
from service.core.identify.envelope_confirm import confirm_by_envelope, drop_contradicted
from service.core.identify.lookups import (
    HitCache,
    PostingsCaps,
    first_tier_budget,
    hits_budget,
    triplet_budget,
)
from service.core.identify.speed_search import after_speed_search
from service.core.identify.triplet_votes import prefer_scaled, triplet_search, triplets_needed
from service.match import (
    Match,
    MatchParams,
    QueryVariant,
    Search,
    find_matches,
    inconclusive,
    merge_matches,
    search_matches,
    variant_of,
)
from service.store import Hits, Store

#: Puts a lookup's hits in an order that does not depend on how the lookups went.
HitOrder = Callable[[Hits], Hits]


@dataclass(frozen=True)
class TierQuery:
    """One clip or window, as the tiers need it (frames on its own grid, from 0)."""

    #: Query-density peaks: the first tier thins them, the speed grid re-hashes them.
    peaks: Peaks
    #: The second tier's hashes (of the sustained peaks when there are any), computed only
    #: when the first tier leaves the query undecided.
    second_tier: Callable[[], Fingerprints]
    #: Band envelopes (service/audio/envelopes.py) on the same grid: weak matches are checked
    #: and, when no tier decides, the second tier's candidates confirmed from them. None: not
    #: checked (stream segments stored before they had envelopes).
    envelope: np.ndarray | None = None
    #: The envelopes' format: only songs' envelopes of the same format are compared.
    envelope_format: int = 0
    #: Decoded samples of a short clip, analysed again at the other hop phases when the
    #: second tier settles nothing; None: no such analysis (windows, long files).
    samples: np.ndarray | None = None
    #: Whether the query may go past the first tier.
    deep: bool = True


@dataclass(frozen=True)
class Ladder:
    """What every query of one identification shares."""

    caps: PostingsCaps
    match_params: MatchParams
    #: The index's fingerprint parameters (queries' peaks are picked under for_queries()).
    params: FingerprintParams
    order_hits: HitOrder | None = None

    def ordered(self, hits: Hits) -> Hits:
        return self.order_hits(hits) if self.order_hits is not None else hits


async def first_tier(
    cache: HitCache, queries: Sequence[TierQuery], seconds: float, ladder: Ladder
) -> list[list[Match]]:
    """Each query's matches from its index-density landmarks, all looked up at once under the
    first tier's budget for `seconds` of audio."""
    params = ladder.params

    def sparse() -> list[QueryVariant]:
        return [variant_of(landmark_hashes(thin_peaks(q.peaks, params), params)) for q in queries]

    variants = await asyncio.to_thread(sparse)
    found: list[list[Match]] = [[] for _ in queries]
    hashes = [v.hashes for v in variants if len(v.hashes)]
    if not hashes:
        return found
    budget = first_tier_budget(ladder.match_params, seconds)
    hits = await cache.hits_for(np.concatenate(hashes), ladder.caps.first, budget)

    def run() -> None:
        ordered = ladder.ordered(hits)
        for i, variant in enumerate(variants):
            if len(variant.hashes):
                found[i] = find_matches([variant], ordered, params, ladder.match_params)

    await asyncio.to_thread(run)
    return found


async def triplet_tier(cache: HitCache, query: TierQuery, ladder: Ladder) -> list[Match]:
    """A query's matches from the triplets of its index-density peaks (an "fp2" index), voted
    under every time scale of MatchParams.triplet_scales(): one lookup for every speed, under
    the budget of MatchParams.max_hits_triplets. When what that finds is inconclusive, its
    most improbable candidates are completed (MatchParams.complete_candidates,
    HitCache.complete) and voted again; when that is still inconclusive, the hashes the
    budget left out are asked too, under the cache's own budget, and voted with the rest
    (max_hits_triplets trades latency, never answers; the cache's budget is the limit)."""
    params, mp = ladder.params, ladder.match_params
    assert params.triplets is not None
    triplets = params.triplets

    def hashes() -> Fingerprints:
        return triplet_hashes(thin_peaks(query.peaks, params), triplets, params.min_bin, query=True)

    fingerprints = await asyncio.to_thread(hashes)
    if not len(fingerprints):
        return []
    budget = triplet_budget(mp, query.peaks.span_s(params.frame_s))
    # Triplet hashes (TRIPLET_TAG) are never a landmark's: a cache of their own, so that the
    # landmark tiers after this one neither pair against the triplets' hits nor keep them.
    cache = cache.sibling()
    hits = await cache.hits_for(fingerprints.hashes, ladder.caps.first, budget)
    completing = candidates_to_complete(hits, fingerprints.hashes, mp)

    def vote(hits: Hits, songs_voted: int = 0) -> Search:
        return triplet_search(
            fingerprints, ladder.ordered(hits), params, mp, completing, songs_voted
        )

    found = await asyncio.to_thread(vote, hits)
    found, completed = await completed_search(
        cache, fingerprints.hashes, found, completing, vote, mp
    )
    hits = completed if completed is not None else hits
    if inconclusive(found.matches, mp):
        more = await cache.hits_for(fingerprints.hashes, ladder.caps.first)
        if len(more) > len(hits):
            found = await asyncio.to_thread(vote, more)
    return found.matches


async def deeper_tiers(
    store: Store, cache: HitCache, query: TierQuery, matches: list[Match], ladder: Ladder
) -> list[Match]:
    """The rest of the ladder for a query whose first tier found `matches`: under "fp2" the
    triplets when those are inconclusive, the second tier and the other hop phases when
    still inconclusive, the speed grid when it is needed ("fp1" only: the triplets have
    searched every speed), then the band envelopes."""
    mp, params = ladder.match_params, ladder.params
    check = mp.envelope_check
    # Candidates are kept for the envelopes to confirm; without envelopes they would confirm
    # nothing (and keeping them changes no match: match.search_matches).
    kept = check.candidates if check is not None and query.envelope is not None else 0
    candidates: list[Match] = []
    phase_candidates: list[Match] = []
    scaled: list[Match] = []
    if params.triplets is not None and triplets_needed(matches, mp):
        scaled = await triplet_tier(cache, query, ladder)
        matches = prefer_scaled(matches, scaled, mp)
    if inconclusive(matches, mp):
        dense = [variant_of(await asyncio.to_thread(query.second_tier))]
        found = await _search(cache, dense, ladder.caps.deep, kept, ladder)
        # The second tier's landmarks hold the first tier's, so its matches replace those.
        # Not the triplets' unless it settles the clip: they search the time scales and
        # pitch shifts the landmarks do not, so what the landmarks miss is no evidence
        # against them.
        matches = found.matches
        if inconclusive(matches, mp):
            matches = prefer_scaled(matches, scaled, mp)
        candidates = found.candidates
    if inconclusive(matches, mp) and query.samples is not None:
        phases = await asyncio.to_thread(phase_variants, query.samples, params)
        if phases:
            # A cache of its own: the phases' hashes share one budget, and those it leaves
            # out must not count as asked when the speed grid's variants ask them again.
            phase_cache = cache.sibling()
            found = await _search(phase_cache, phases, ladder.caps.deep, kept, ladder)
            matches = merge_matches(matches, found.matches, mp.max_matches)
            phase_candidates = found.candidates
    if params.triplets is None:
        # The grid looks up under a tighter cap, and a variant's cap is judged by the rows of
        # each hash in the hits: a completed hash's few rows would pass it for the completed
        # songs alone.
        cache.drop_completions()
        matches = await after_speed_search(
            cache, matches, query.peaks, ladder.caps.speed, params, mp, ladder.order_hits
        )
    matches = await drop_contradicted(
        store, query.envelope, query.envelope_format, matches, params, mp
    )
    if not matches and (candidates or phase_candidates):
        confirmed = await confirm_by_envelope(
            store,
            query.envelope,
            query.envelope_format,
            candidates,
            params,
            mp,
            phase_candidates,
        )
        matches = [confirmed] if confirmed is not None else []
    return matches


async def _search(
    cache: HitCache,
    variants: list[QueryVariant],
    cap: int | None,
    candidates: int,
    ladder: Ladder,
) -> Search:
    """One lookup of `variants`' hashes under `cap`, and their matches and `candidates`
    candidates (weak ones included, for the envelopes). When that is inconclusive and the
    budget left hashes out, the most improbable candidates are completed
    (MatchParams.complete_candidates, HitCache.complete) and searched again."""
    mp = ladder.match_params
    hashes = np.concatenate([v.hashes for v in variants])
    hits = await cache.hits_for(hashes, cap)
    completing = candidates_to_complete(hits, hashes, mp)

    def run(hits: Hits, songs_voted: int = 0) -> Search:
        return search_matches(
            variants,
            ladder.ordered(hits),
            ladder.params,
            mp,
            speeds_tried=1,
            candidates=max(candidates, completing),
            weak_candidates=True,
            songs_voted=songs_voted,
        )

    found = await asyncio.to_thread(run, hits)
    found, _ = await completed_search(cache, hashes, found, completing, run, mp)
    return Search(found.matches, found.candidates[:candidates], found.songs)


def phase_variants(samples: np.ndarray, params: FingerprintParams) -> list[QueryVariant]:
    """The clip analysed again at its other hop phases (FingerprintParams.query_hop_phases):
    the hashes of each analysis's sustained peaks, as a variant starting that much later."""
    qparams = params.for_queries()
    return [
        variant_of(landmark_hashes(peaks, qparams), shift / params.sample_rate_hz)
        for shift, peaks in zip(
            params.hop_phase_shifts(), sustained_peaks_at_phases(samples, qparams), strict=True
        )
    ]


@dataclass(frozen=True)
class Window:
    """One window's query-density peaks (on the window's own frame grid, from 0)."""

    peaks: Peaks
    #: Whether the window may go past the first tier (TierQuery.deep).
    deep: bool = True
    #: The window's band envelopes (TierQuery.envelope). None: not checked.
    envelope: np.ndarray | None = None
    envelope_format: int = 0
    #: The window's second-tier peaks (peaks.find_sustained_peaks), on the same grid; None:
    #: its query-density peaks serve that tier too.
    sustained: Peaks | None = None


async def match_window_tiers(
    store: Store,
    windows: Sequence[Window],
    window_s: float,
    caps: PostingsCaps,
    match_params: MatchParams,
    params: FingerprintParams,
    order_hits: HitOrder | None = None,
) -> list[list[Match]]:
    """Matches of every window, best first: the first tier for the batch in one lookup, then
    each deep window's deeper tiers through a HitCache of its own (with a clip's budget), so
    that what a window's lookups hold is dropped with it. Windows without second-tier hashes
    (silence) have no matches."""
    qparams = params.for_queries()

    def second_tiers() -> list[Fingerprints]:
        return [
            landmark_hashes(w.peaks if w.sustained is None else w.sustained, qparams)
            for w in windows
        ]

    dense = await asyncio.to_thread(second_tiers)
    found: list[list[Match]] = [[] for _ in windows]
    present = [i for i, fp in enumerate(dense) if len(fp.hashes)]
    queries = [
        TierQuery(
            peaks=windows[i].peaks,
            second_tier=_given(dense[i]),
            envelope=windows[i].envelope,
            envelope_format=windows[i].envelope_format,
            deep=windows[i].deep,
        )
        for i in present
    ]
    ladder = Ladder(caps, match_params, params, order_hits)
    first = await first_tier(HitCache(store), queries, len(present) * window_s, ladder)
    for i, query, matches in zip(present, queries, first, strict=True):
        found[i] = matches
        if query.deep:
            cache = HitCache(store, hits_budget(match_params, window_s))
            found[i] = await deeper_tiers(store, cache, query, matches, ladder)
    return found


def _given(fingerprints: Fingerprints) -> Callable[[], Fingerprints]:
    return lambda: fingerprints

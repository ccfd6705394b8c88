"""Windows of a stream or of a long file, matched in identify's tiers a batch at a time.

A window is matched like a clip (core/identify/identify.py): its index-density landmarks
under the first tier's budget, then, if that settled nothing, the landmarks of its sustained
peaks (of its query-density ones when it has none), then the speed grid coarse to fine
(speed_search.py).

At 100,000 songs the deeper tiers cost seconds and millions of postings per window, so they
take the open windows one at a time, each with a clip's budget and a HitCache of its own: the
hits a lookup holds, and with them a process's memory, stay those of one clip whatever the
batch or the file's length (four windows per lookup held 10 GB at the peak of a 26-minute
file's timeline). The first tier is cheap (150,000 postings per window at most) and serves the
whole batch in one lookup, under the budget of as many clips.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from service.audio.hashes import landmark_hashes
from service.audio.params import FingerprintParams
from service.audio.peaks import Peaks, thin_peaks
from service.core.identify.envelope_confirm import confirm_by_envelope, drop_contradicted
from service.core.identify.lookups import HitCache, PostingsCaps, first_tier_budget, hits_budget
from service.core.identify.speed_search import after_speed_search
from service.match import (
    Match,
    MatchParams,
    QueryVariant,
    find_matches,
    inconclusive,
    search_matches,
    variant_of,
)
from service.store import Hits, Store


@dataclass(frozen=True)
class Window:
    """One window's query-density peaks (on the window's own frame grid, from 0)."""

    peaks: Peaks
    #: Whether the window may go past the first tier (a stream's window whose audio has not
    #: all arrived yet is matched again when it has).
    deep: bool = True
    #: The window's band envelopes (service/audio/envelopes.py), on the same frame grid:
    #: its weak matches are checked and, when no tier decides it, its candidates confirmed
    #: from them, as a clip's are (envelope_confirm.py). None: not checked (stream segments
    #: stored before they had envelopes).
    envelope: np.ndarray | None = None
    #: The envelopes' format (service/audio/envelopes.py EnvelopeParams.format): only songs'
    #: envelopes of the same format are compared with them.
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
    order_hits: Callable[[Hits], Hits] | None = None,
) -> list[list[Match]]:
    """Matches of every window, best first. The first tier and each window's deeper tiers
    fetch through a HitCache of their own, so that what a window's lookups hold is dropped with
    it. `order_hits` puts each lookup's hits in an order that does not depend on which windows
    shared it (streams need it: their log must not depend on the order the segments came
    in). Windows with envelopes are checked against their matches' and, when no tier decides
    them, their second tier's candidates' envelopes."""
    qparams = params.for_queries()

    def prepare() -> tuple[list[QueryVariant], list[QueryVariant]]:
        sparse = [variant_of(landmark_hashes(thin_peaks(w.peaks, params), params)) for w in windows]
        dense = [
            variant_of(landmark_hashes(w.peaks if w.sustained is None else w.sustained, qparams))
            for w in windows
        ]
        return sparse, dense

    sparse, dense = await asyncio.to_thread(prepare)
    found: list[list[Match]] = [[] for _ in windows]
    candidates: list[list[Match]] = [[] for _ in windows]
    check = match_params.envelope_check

    async def tier(
        cache: HitCache,
        chosen: list[int],
        variants: list[QueryVariant],
        cap: int | None,
        budget: int | None = None,
        keep_candidates: bool = False,
    ) -> None:
        hashes = [variants[i].hashes for i in chosen if len(variants[i].hashes)]
        if not hashes:
            return
        hits = await cache.hits_for(np.concatenate(hashes), cap, budget)

        def run() -> None:
            ordered = order_hits(hits) if order_hits is not None else hits
            for i in chosen:
                if not len(variants[i].hashes):
                    continue
                if keep_candidates and check is not None and windows[i].envelope is not None:
                    search = search_matches(
                        [variants[i]],
                        ordered,
                        params,
                        match_params,
                        1,
                        check.candidates,
                        weak_candidates=True,
                    )
                    found[i], candidates[i] = search.matches, search.candidates
                else:
                    found[i] = find_matches([variants[i]], ordered, params, match_params)

        await asyncio.to_thread(run)

    present = [i for i, v in enumerate(dense) if len(v.hashes)]
    first = first_tier_budget(match_params, len(present) * window_s)
    await tier(HitCache(store), present, sparse, caps.first, first)
    for i in present:
        window = windows[i]
        if not window.deep:
            continue
        cache = HitCache(store, hits_budget(match_params, window_s))
        if inconclusive(found[i], match_params):
            await tier(cache, [i], dense, caps.deep, keep_candidates=True)
        found[i] = await after_speed_search(
            cache, found[i], window.peaks, caps.speed, params, match_params, order_hits
        )
        found[i] = await drop_contradicted(
            store, window.envelope, window.envelope_format, found[i], params, match_params
        )
        if not found[i] and candidates[i]:
            confirmed = await confirm_by_envelope(
                store, window.envelope, window.envelope_format, candidates[i], params, match_params
            )
            found[i] = [confirmed] if confirmed is not None else []
    return found

"""A clip's triplets (index format "fp2") voted under every time scale, and how their
matches join the landmarks': the pure part of the triplet tier (tiers.triplet_tier looks the
hashes up and calls these)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from service.audio.hashes import Fingerprints
from service.audio.params import FingerprintParams
from service.match import (
    Match,
    MatchParams,
    Search,
    merge_matches,
    scale_variants,
    search_matches,
    speed_search_needed,
)
from service.match.pairs import AllowedGroups
from service.match.search import time_scale_reach
from service.match.votes import aligning_groups
from service.store import Hits


def triplets_needed(matches: list[Match], match_params: MatchParams) -> bool:
    """Whether an "fp2" query's landmark matches need its triplets: when they settle nothing,
    when the best drifts by more than a step of the speed grid without being improbable
    enough for a drifting match (match.speed_search_needed), or when its drift reaches the
    edge of the residual time scales the landmarks' vote searches (MatchParams.
    time_scale_range): the clip may then play at a scale beyond it."""
    if speed_search_needed(matches, match_params):
        return True
    edge = match_params.time_scale_range - match_params.triplet_scale_step
    return abs(matches[0].speed - 1.0) >= edge


def prefer_scaled(
    matches: list[Match], scaled: list[Match], match_params: MatchParams
) -> list[Match]:
    """The landmark `matches` with every song the triplets found replaced by the triplets'
    match (which searched its time scale over the whole range, where the landmarks' residual
    scale stops at time_scale_range), ordered as merge_matches orders."""
    found = {m.song_id for m in scaled}
    kept = [m for m in matches if m.song_id not in found]
    return merge_matches(kept, scaled, match_params.max_matches)


def triplet_search(
    triplets: Fingerprints,
    hits: Hits,
    params: FingerprintParams,
    match_params: MatchParams,
    candidates: int = 0,
    songs_voted: int = 0,
) -> Search:
    """Matches of a query's triplet hashes voted under every time scale of
    MatchParams.triplet_scales(), each refined within a step of the scale grid; first, when
    MatchParams.triplet_coarse_scale_step is set, under the coarse grid (itself voted only
    on the songs a still coarser one could align: triplet_coarser_scale_step), so that each song
    is voted only under the fine scales near a coarse one that could align it
    (votes.aligning_groups): every match of the fine grid alone, at a fraction of the voting
    (a song the passes leave out could at most have taken a place among those refined for a
    time scale), and its `candidates` most improbable songs of at least min_score votes
    (search_matches) among those the passes kept. `songs_voted`: as search_matches', when
    `hits` holds the postings of only some of the songs the query's triplets met."""
    mp = match_params
    fine = replace(mp, time_scale_range=mp.triplet_scale_step)
    scales = mp.triplet_scales()
    variants = scale_variants(triplets, scales)
    if mp.triplet_coarse_scale_step <= 0 or not len(hits) or not len(triplets):
        return search_matches(
            variants, hits, params, fine, candidates=candidates, songs_voted=songs_voted
        )
    frames = int(triplets.offsets.max()) + 1

    # An alignment the fine grid finds drifts by up to what its refinement searches, plus
    # half a step of a coarser grid under its nearest scale, over the query's length at the
    # largest scale; a frame either way for the rounding of scaled frames.
    refine = time_scale_reach(fine, frames)
    longest = frames * (1.0 + mp.triplet_scale_range)

    def drift(step: float) -> int:
        return math.ceil((refine + step / 2) * longest) + 2

    # The coarser grid first, then the coarse one on the songs it could align: each pass
    # leaves the next the hits of those songs only.
    kept, songs_met = hits, songs_voted
    steps = (mp.triplet_coarser_scale_step, mp.triplet_coarse_scale_step)
    for step in (s for s in steps if s > 0):
        coarse = scale_variants(triplets, mp.triplet_coarse_scales(step))
        aligning, met = aligning_groups(coarse, kept, drift(step), mp.min_score)
        songs_met = max(songs_met, met)
        if len(aligning.songs) == 0:
            return Search([], [])
        kept = kept.select(np.isin(kept.song_ids, aligning.songs))
    coarse_scales = mp.triplet_coarse_scales()
    # Fine scale j may vote for a song when a coarse scale within half a coarse step of it
    # could align that song.
    near = np.abs(np.subtract.outer(coarse_scales, scales)) <= (
        mp.triplet_coarse_scale_step / 2 + 1e-9
    )
    allowed = (aligning.allowed.astype(np.int32) @ near.astype(np.int32)) > 0
    return search_matches(
        variants,
        kept,
        params,
        fine,
        songs_voted=songs_met,
        groups=AllowedGroups(aligning.songs, allowed),
        candidates=candidates,
    )

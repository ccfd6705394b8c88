"""Hits -> scored, aligned matches, tolerant of speed and pitch changes.

params (MatchParams), variants (a query's landmarks under assumed speeds), pairs (query/stored
pairs sharing a hash), votes (pairs reduced to independent evidence), scoring (the chance model,
time-scale refinement), search (matches and candidates from the votes), envelopes (band
envelopes judging a match or candidate).
"""

from service.match.envelopes import EnvelopeCheckParams
from service.match.params import MatchParams
from service.match.scoring import chance_log10_p, refine_time_scale
from service.match.search import (
    Match,
    Search,
    find_matches,
    inconclusive,
    merge_matches,
    search_matches,
    speed_search_needed,
)
from service.match.variants import QueryVariant, scale_variants, speed_variants, variant_of
from service.match.votes import best_offsets

__all__ = [
    "EnvelopeCheckParams",
    "Match",
    "MatchParams",
    "QueryVariant",
    "Search",
    "best_offsets",
    "chance_log10_p",
    "find_matches",
    "inconclusive",
    "merge_matches",
    "refine_time_scale",
    "scale_variants",
    "search_matches",
    "speed_search_needed",
    "speed_variants",
    "variant_of",
]

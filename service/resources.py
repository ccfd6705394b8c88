"""The resources a process opens: the store, the CPU pool and the AWS clients."""

from __future__ import annotations

from service.match import MatchParams
from service.match.envelopes import EnvelopeCheckParams
from service.settings import Settings


def match_params_of(settings: Settings) -> MatchParams:
    """The matcher's parameters the settings choose (the API, the CLI and the worker)."""
    return MatchParams(
        min_confidence=settings.min_confidence,
        max_matches=settings.max_matches,
        envelope_check=EnvelopeCheckParams() if settings.envelope_check else None,
    )

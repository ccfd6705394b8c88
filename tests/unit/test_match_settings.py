"""The matcher's settings reach its parameters, and their defaults are the matcher's own."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.match import MatchParams
from service.resources import match_params_of
from service.settings import Settings


def test_the_lookup_budget_defaults_to_the_matchers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAX_HITS_PER_LOOKUP", raising=False)
    assert Settings().max_hits_per_lookup == MatchParams().max_hits_per_lookup
    assert match_params_of(Settings()) == MatchParams()


def test_the_lookup_budget_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_HITS_PER_LOOKUP", "250000")
    assert match_params_of(Settings()).max_hits_per_lookup == 250_000
    monkeypatch.setenv("MAX_HITS_PER_LOOKUP", "5000")
    with pytest.raises(ValidationError, match="max_hits_per_lookup"):
        Settings()

"""Both backends implement every part of the Store protocol, method for method."""

from __future__ import annotations

import inspect

import pytest

from service.store import CatalogueStore, IngestLedger, Store, StreamLog
from service.store.postgres import PostgresStore
from service.store.sqlite import SqliteStore

PARTS = (CatalogueStore, IngestLedger, StreamLog, Store)


def _methods(protocol: type) -> dict[str, object]:
    return {
        name: member
        for name, member in vars(protocol).items()
        if callable(member) and not name.startswith("_")
    }


def _shape(function: object) -> list[tuple[str, object, object]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


def test_the_parts_make_up_the_store() -> None:
    names = [set(_methods(part)) for part in PARTS]
    assert all(names), "every part declares methods"
    assert not set.intersection(*names[:3]), "no method belongs to two parts"
    everything = set().union(*names)
    assert len(everything) == 37
    assert {name for name in dir(Store) if name in everything} == everything


@pytest.mark.parametrize("backend", [PostgresStore, SqliteStore])
@pytest.mark.parametrize("part", PARTS, ids=lambda p: p.__name__)
def test_backend_implements_every_method_of_each_part(backend: type, part: type) -> None:
    for name, declared in _methods(part).items():
        implemented = getattr(backend, name, None)
        assert implemented is not None, f"{backend.__name__} lacks {name}"
        assert _shape(implemented) == _shape(declared), f"{backend.__name__}.{name}"
        assert inspect.iscoroutinefunction(implemented) == inspect.iscoroutinefunction(declared)

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
    assert len(everything) == 53
    assert {name for name in dir(Store) if name in everything} == everything


@pytest.mark.parametrize("backend", [PostgresStore, SqliteStore])
@pytest.mark.parametrize("part", PARTS, ids=lambda p: p.__name__)
def test_backend_implements_every_method_of_each_part(backend: type, part: type) -> None:
    for name, declared in _methods(part).items():
        implemented = getattr(backend, name, None)
        assert implemented is not None, f"{backend.__name__} lacks {name}"
        assert _shape(implemented) == _shape(declared), f"{backend.__name__}.{name}"
        assert inspect.iscoroutinefunction(implemented) == inspect.iscoroutinefunction(declared)


def test_the_store_imports_nothing_above_it() -> None:
    """The store knows records, audio types and its databases, nothing of matching, the use
    cases or the adapters."""
    import ast
    from pathlib import Path

    import service.store

    allowed = (
        "service.store",
        "service.audio",
        "service.arrays",
        "service.errors",
        "service.settings",
    )
    root = Path(service.store.__file__).parent
    imported: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                if name.startswith("service") and not name.startswith(allowed):
                    imported.setdefault(str(path.relative_to(root)), set()).add(name)
    assert len(list(root.rglob("*.py"))) > 10
    assert imported == {}

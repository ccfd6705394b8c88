"""The package's shape, enforced: data flows one way, bytes -> samples -> fingerprints ->
store / matches -> reports, and the adapters (api, worker, aws, cli) are thin shells around
core that never import one another.

Every import statement of every module is read from its syntax tree, function-level imports
included, so a lazy import cannot slip past a rule.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICE = Path(__file__).resolve().parents[2] / "service"

ADAPTERS = ("service.api", "service.worker", "service.aws", "service.cli")


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(SERVICE.rglob("*.py")):
        parts = path.relative_to(SERVICE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(module: str) -> set[str]:
    """The service modules `module` imports (for `from package import name`, both)."""
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES)
    return {n for n in names if n == "service" or n.startswith("service.")}


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _owner(name: str, packages: tuple[str, ...]) -> str | None:
    return next((p for p in packages if _within(name, p)), None)


def _violations(importer: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{module} imports {name}"
        for module in MODULES
        if _within(module, importer)
        for name in sorted(_imports(module))
        if _owner(name, forbidden) is not None
    ]


def test_the_rules_see_the_whole_package():
    assert {"service.api.app", "service.core.identify.tiers", "service.match.search"} <= set(
        MODULES
    )
    assert "service.match" in _imports("service.core.identify.tiers")
    # A module the tree names is seen even when imported from its package.
    assert "service.core.streams.plays" in _imports("service.api.routes_streams")
    assert _owner("service.worker.runtime", ADAPTERS) == "service.worker"


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_adapters_never_import_one_another(adapter):
    others = tuple(a for a in ADAPTERS if a != adapter)
    assert _violations(adapter, others) == []


def test_only_the_entry_point_imports_the_hosts():
    """service/hosts.py puts the adapters together into processes; only `cli` starts them."""
    importers = [m for m in MODULES if "service.hosts" in _imports(m) and m not in ("service.cli",)]
    assert importers == []


def test_the_store_knows_nothing_of_matching_use_cases_or_adapters():
    assert _violations("service.store", ("service.match", "service.core", *ADAPTERS)) == []


def test_audio_imports_nothing_of_the_service_but_errors():
    bad = [
        f"{module} imports {name}"
        for module in MODULES
        if _within(module, "service.audio")
        for name in sorted(_imports(module))
        if name != "service"
        and not _within(name, "service.audio")
        and not _within(name, "service.errors")
    ]
    assert bad == []


def test_matching_imports_no_use_case_nor_adapter():
    forbidden = ("service.core", "service.resources", "service.startup", "service.hosts")
    assert _violations("service.match", (*forbidden, *ADAPTERS)) == []


def test_use_cases_import_no_adapter():
    assert _violations("service.core", (*ADAPTERS, "service.hosts", "service.startup")) == []


@pytest.mark.parametrize("shared", ["service.objects", "service.schemas", "service.worker.ports"])
def test_what_adapters_share_imports_no_adapter(shared):
    """The types two adapters exchange (an announced object, a report, the worker's ports)
    sit outside every other adapter, so sharing them never couples adapters."""
    others = tuple(a for a in ADAPTERS if not _within(shared, a))
    assert _violations(shared, others) == []

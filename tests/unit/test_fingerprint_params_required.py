"""No service callable falls back to a fingerprint format of its own.

The catalogue's format (FINGERPRINT_FORMAT, "fp1" or "fp2") decides the parameters every
analysis must use; a parameter defaulting to DEFAULT_PARAMS would let a caller that forgets to
pass them fingerprint an "fp2" catalogue's audio as "fp1", silently. So every function, method
and parameter object of the service taking a FingerprintParams takes it without a default.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Iterator

import pytest

import service
from service.audio.analysis import analyse_file, analyse_query
from service.audio.fingerprint import fingerprint
from service.audio.params import DEFAULT_PARAMS
from service.core.bulk import BulkOptions, suspected_duplicates
from service.core.identify.identify import identify_analysed, identify_file
from service.core.identify.timeline import timeline
from service.core.index import analyse_source, index_path
from service.core.streams.segment import add_segment, process_stream_segment
from service.core.streams.windows import match_windows
from service.resources import Resources
from service.worker.handlers import ObjectHandler


def _modules() -> Iterator[object]:
    for info in pkgutil.walk_packages(service.__path__, "service."):
        if not info.name.endswith(".__main__"):  # runs the command line when imported
            yield importlib.import_module(info.name)


def _callables() -> Iterator[tuple[str, object]]:
    """Every function and class the service defines, and the methods of its classes."""
    for module in _modules():
        for name, member in vars(module).items():
            if getattr(member, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(member):
                yield f"{module.__name__}.{name}", member
            elif inspect.isclass(member):
                yield f"{module.__name__}.{name}", member
                for attr, method in vars(member).items():
                    if inspect.isfunction(method) and attr != "__init__":
                        yield f"{module.__name__}.{name}.{attr}", method


def _fingerprint_parameters(target: object) -> list[inspect.Parameter]:
    try:
        signature = inspect.signature(target)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return []
    return [p for p in signature.parameters.values() if "FingerprintParams" in str(p.annotation)]


def _defaulted() -> tuple[set[object], list[str]]:
    """(the callables taking a FingerprintParams, those where it has a default)."""
    seen, defaulted = set(), []
    for name, target in _callables():
        for parameter in _fingerprint_parameters(target):
            seen.add(target)
            if parameter.default is not inspect.Parameter.empty:
                defaulted.append(f"{name}({parameter.name}={parameter.default!r:.40})")
    return seen, defaulted


SEEN, DEFAULTED = _defaulted()

#: The use cases and parameter objects the adapters (API, CLI, worker) call with the
#: catalogue's parameters: the scan must reach them, or it proves nothing.
ENTRY_POINTS = [
    fingerprint,
    analyse_file,
    analyse_query,
    analyse_source,
    index_path,
    identify_file,
    identify_analysed,
    timeline,
    match_windows,
    process_stream_segment,
    add_segment,
    suspected_duplicates,
    BulkOptions,
    ObjectHandler,
    Resources,
]


def test_no_fingerprint_parameters_have_a_default() -> None:
    assert DEFAULTED == []


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=lambda e: e.__qualname__)
def test_the_scan_reaches_every_entry_point(entry: object) -> None:
    assert entry in SEEN


def test_a_forgotten_format_is_refused_before_any_work() -> None:
    """Called without the catalogue's parameters, the use cases fail at the call, not with
    the default format's fingerprints."""
    with pytest.raises(TypeError, match="params"):
        analyse_file("/nonexistent.mp3")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="params"):
        BulkOptions(in_flight=1)  # type: ignore[call-arg]
    assert BulkOptions(params=DEFAULT_PARAMS).params is DEFAULT_PARAMS

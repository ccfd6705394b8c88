"""`song-detection` with its Prometheus recording turned into no-ops: the baseline of
benchmarks/telemetry_overhead.py (run it with LOG_LEVEL=WARNING to silence the log lines as
well). prometheus-client's recording methods are replaced before the service imports them, so
every metric call still happens but records nothing."""

from __future__ import annotations

import sys
from typing import Any

from prometheus_client import Counter, Gauge, Histogram


def _nothing(*_: Any, **__: Any) -> None:
    return None


for metric, methods in (
    (Counter, ("inc",)),
    (Gauge, ("inc", "dec", "set")),
    (Histogram, ("observe",)),
):
    for method in methods:
        setattr(metric, method, _nothing)

if __name__ == "__main__":
    from service.cli import main

    sys.exit(main())

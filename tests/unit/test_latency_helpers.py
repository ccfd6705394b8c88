"""The latency benchmark's pure helpers: /proc parsing, the pool worker's command line, and
the targets' arithmetic over recorded requests."""

from __future__ import annotations

import pytest

from benchmarks.latency_report import p50_ratio, request_mb_bound, targets_table
from benchmarks.process_memory import is_pool_worker, status_kib

STATUS = "Name:\tpython\nVmPeak:\t  900000 kB\nVmHWM:\t  312000 kB\nVmRSS:\t  250000 kB\n"


def test_status_fields_in_kib() -> None:
    assert status_kib(STATUS, "VmHWM") == 312_000
    assert status_kib(STATUS, "VmRSS") == 250_000
    with pytest.raises(KeyError):
        status_kib(STATUS, "VmSwap")


def test_pool_worker_is_the_spawned_worker_not_the_resource_tracker() -> None:
    worker = b"python\x00-B\x00-c\x00from multiprocessing.spawn import spawn_main; spawn_main(tracker_fd=8, pipe_handle=13)\x00--multiprocessing-fork\x00"  # noqa: E501
    tracker = b"python\x00-B\x00-c\x00from multiprocessing.resource_tracker import main;main(7)\x00"
    assert is_pool_worker(worker)
    assert not is_pool_worker(tracker)
    assert not is_pool_worker(b"python\x00-m\x00service.cli\x00serve\x00")


def _sample(fmt: str, kind: str, ms: float, pool_mb: float, service_mb: float) -> dict:
    return {
        "format": fmt,
        "kind": kind,
        "condition": "clean",
        "server_ms": ms,
        "pool_peak_mb": pool_mb,
        "service_peak_mb": service_mb,
    }


MEASURED = {
    "formats": {
        "fp1": {"size": {"songs": 10_000}, "idle": {"pool_rss_mb": 100, "service_rss_mb": 200}}
    },
    "samples": [
        _sample("fp1", "known", 20, 150, 230),
        _sample("fp1", "known", 30, 160, 240),
        _sample("fp1", "known", 40, 150, 230),
        _sample("fp1", "unknown", 90, 170, 400),
        _sample("fp1", "speed", 50, 150, 260),
    ],
}


def test_ratios_are_of_p50s_within_one_format() -> None:
    assert p50_ratio(MEASURED["samples"], "fp1", "unknown") == pytest.approx(3.0)
    assert p50_ratio(MEASURED["samples"], "fp1", "speed") == pytest.approx(50 / 30)


def test_memory_bound_is_both_processes_peaks_above_idle() -> None:
    assert request_mb_bound(MEASURED, "fp1") == pytest.approx(70 + 200)


def test_the_service_bound_counts_from_its_size_before_the_warm_up() -> None:
    # A warm-up clip that climbed the tiers left the service at 380 MB: above that, the
    # unknown clip's 400 MB peak would bound a request at 20 MB.
    formats = {"fp1": {**MEASURED["formats"]["fp1"]}}
    formats["fp1"]["idle"] = {"pool_rss_mb": 100, "service_rss_mb": 380}
    formats["fp1"]["started"] = {"pool_rss_mb": 0, "service_rss_mb": 150}
    assert request_mb_bound({**MEASURED, "formats": formats}, "fp1") == pytest.approx(70 + 250)


def test_targets_say_which_are_met() -> None:
    text = "\n".join(targets_table([MEASURED], ["fp1"]))
    assert "| unknown clip p50 <= 2x a known clip's | 10,000 | 3.0x, **not met** |" in text
    assert "| speed-changed clip p50 <= 2x a known clip's | 10,000 | 1.7x, met |" in text
    assert "| known clip p50 <= 30 ms | 10,000 | 30 ms, met |" in text
    assert "| unknown clip p50 <= 60 ms | 10,000 | 90 ms, **not met** |" in text
    assert "| memory per request <= 200 MB | 10,000 | 270 MB, **not met** |" in text

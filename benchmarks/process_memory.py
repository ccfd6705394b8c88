"""The resident memory one request adds to a process: its high-water mark reset before the
request (`echo 5 > /proc/PID/clear_refs`), read after (VmHWM), against its resident size
before (VmRSS). Linux only.

The service decodes and fingerprints in a process pool (service/executor.py, spawned
children) and looks up and votes in its own process, so a request's memory is measured in
both: `pool_children` finds the pool's processes among the service's children.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


def status_kib(status: str, field: str) -> int:
    """A `/proc/PID/status` field given in kB ("VmHWM:\\t  123456 kB") -> 123456."""
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name == field:
            return int(value.split()[0])
    raise KeyError(field)


def children(pid: int) -> list[int]:
    """The process's children (every thread's), in pid order."""
    found: set[int] = set()
    for task in (PROC / str(pid) / "task").iterdir():
        try:
            found.update(int(x) for x in (task / "children").read_text().split())
        except FileNotFoundError:  # the thread ended meanwhile
            continue
    return sorted(found)


def is_pool_worker(cmdline: bytes) -> bool:
    """Whether a `/proc/PID/cmdline` is a multiprocessing "spawn" worker (not its resource
    tracker, which is spawned beside the workers)."""
    return b"spawn_main" in cmdline and b"resource_tracker" not in cmdline


def pool_children(pid: int) -> list[int]:
    """The service's process-pool workers."""
    found = []
    for child in children(pid):
        try:
            cmdline = (PROC / str(child) / "cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if is_pool_worker(cmdline):
            found.append(child)
    return found


@dataclass
class PeakProbe:
    """One process's resident size before a request and its peak during it (kB)."""

    pid: int
    before_kib: int = 0

    def _status(self) -> str:
        return (PROC / str(self.pid) / "status").read_text()

    def reset(self) -> None:
        """Start a request: the high-water mark drops to the resident size now."""
        (PROC / str(self.pid) / "clear_refs").write_text("5")
        self.before_kib = status_kib(self._status(), "VmRSS")

    def read(self) -> dict[str, float]:
        """After the request: peak resident MB, and MB above the size before it."""
        peak = status_kib(self._status(), "VmHWM")
        return {"peak_mb": peak / 1024, "added_mb": max(0, peak - self.before_kib) / 1024}

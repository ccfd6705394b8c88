"""Private PostgreSQL clusters for tests that stop or break the server, or need a replica.

The session's shared server (db_fixtures.py) must never be stopped: tests that SIGSTOP a
database start their own cluster with initdb, on a free port, in a temporary directory, run as
the `postgres` user when the tests run as root (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found: install the PostgreSQL server binaries")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateCluster:
    def __init__(self) -> None:
        # Not under pytest's tmp_path: its parents are private to root, and the server runs
        # as `postgres`.
        self.folder = Path(tempfile.mkdtemp(prefix="song-detection-pg-"))
        self.data = self.folder / "data"
        self.port = _free_port()
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            self._as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as_user, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self._own_folder()
        self._run(_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-N")
        self._start_server()

    def _own_folder(self) -> None:
        if self._as_user:
            user = pwd.getpwnam("postgres")
            os.chown(self.folder, user.pw_uid, user.pw_gid)

    def _start_server(self) -> None:
        self._run(
            _bin("pg_ctl"), "-D", str(self.data), "-l", str(self.folder / "log"), "-w",
            "-o", f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )  # fmt: skip

    @property
    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def _processes(self) -> list[int]:
        """The postmaster and its children (backends, checkpointer, ...)."""
        root = self.postmaster_pid
        children = []
        for stat in glob.glob("/proc/[0-9]*/stat"):
            try:
                fields = Path(stat).read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == root:
                children.append(int(Path(stat).parent.name))
        return [root, *children]

    def freeze(self) -> None:
        """SIGSTOP the whole cluster: connections stay open, nothing answers."""
        for pid in self._processes():
            os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self._processes():
            os.kill(pid, signal.SIGCONT)

    def stop(self) -> None:
        with suppress(OSError, ValueError):  # already gone, or never started
            self.thaw()
        subprocess.run(
            [*self._as_user, _bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(self.folder, ignore_errors=True)


class PrivateStandby(PrivateCluster):
    """A hot standby streaming from `primary`: a base backup taken with `pg_basebackup -R`
    (which writes standby.signal and primary_conninfo), started on a port of its own. initdb's
    trust rules admit replication connections from 127.0.0.1."""

    def __init__(self, primary: PrivateCluster) -> None:
        super().__init__()
        self.primary = primary

    def start(self) -> None:
        self._own_folder()
        self._run(
            _bin("pg_basebackup"), "-D", str(self.data), "-h", "127.0.0.1",
            "-p", str(self.primary.port), "-U", "postgres", "-R", "-X", "stream", "-c", "fast",
        )  # fmt: skip
        self._start_server()


def have_server_binaries(*names: str) -> bool:
    """Whether the PostgreSQL server programs `names` are installed."""
    try:
        for name in names:
            _bin(name)
    except RuntimeError:
        return False
    return True


@contextmanager
def streaming_replica() -> Iterator[tuple[PrivateCluster, PrivateStandby]]:
    """A private primary and a hot standby streaming from it."""
    with private_cluster() as primary:
        standby = PrivateStandby(primary)
        try:
            standby.start()
            yield primary, standby
        finally:
            standby.stop()


@contextmanager
def private_cluster() -> Iterator[PrivateCluster]:
    cluster = PrivateCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def wait_until(predicate, timeout_s: float = 30.0, interval_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()

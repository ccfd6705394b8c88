"""Temporary files left by killed processes are deleted when the service starts again."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from service.tempfiles import sweep_orphans, temp_prefix


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_files_of_processes_that_no_longer_run_are_deleted(tmp_path):
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = _dead_pid()
        names = {
            "dead_upload": f"song-detection-upload-{dead}-abc.mp3",
            "dead_download": f"song-detection-download-{dead}-xyz.ts",
            "own_previous": f"song-detection-upload-{os.getpid()}-old.wav",
            "alive": f"song-detection-download-{alive.pid}-busy.mp3",
            "unrelated": f"upload-{dead}-not-ours.mp3",
        }
        for name in names.values():
            (tmp_path / name).write_bytes(b"x")
        # This process's pid on a file older than the process: a previous incarnation's.
        os.utime(tmp_path / names["own_previous"], (1_000_000, 1_000_000))
        own_now = tmp_path / f"song-detection-upload-{os.getpid()}-in-use.mp3"
        own_now.write_bytes(b"x")
        (tmp_path / f"song-detection-upload-{dead}-dir").mkdir()
        assert sweep_orphans(str(tmp_path)) == 3
        left = {p.name for p in tmp_path.iterdir()}
        assert left == {
            names["alive"],
            names["unrelated"],
            own_now.name,
            f"song-detection-upload-{dead}-dir",
        }
    finally:
        alive.kill()
        alive.wait()


def test_names_carry_the_pid_the_sweep_reads(tmp_path):
    fd, path = tempfile.mkstemp(prefix=temp_prefix("upload"), dir=tmp_path)
    os.close(fd)
    assert os.path.basename(path).startswith(f"song-detection-upload-{os.getpid()}-")
    # Another process's start-up leaves a running process's files alone.
    code = f"from service.tempfiles import sweep_orphans; print(sweep_orphans({str(tmp_path)!r}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0" and os.path.exists(path)

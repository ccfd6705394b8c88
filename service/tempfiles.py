"""Temporary files of uploads and downloads, and the ones a killed process left behind.

Uploads and S3 downloads are spooled to named temporary files (the analysis processes open
them by path) and deleted when the request or message is done. A process killed with SIGKILL
(the OOM killer, `kill -9`, a task stopped past its grace period) deletes nothing, so every
name carries the pid of its process, and a starting API or worker deletes the files of
processes that no longer run.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time

log = logging.getLogger(__name__)

_PREFIX = "song-detection-"
_NAME = re.compile(rf"{re.escape(_PREFIX)}[a-z]+-(\d+)-")
#: Files named with this process's pid but older than this are a previous process's (a
#: restarted container reuses pids); newer ones are this process's own.
_STARTED_AT = time.time()


def temp_prefix(kind: str) -> str:
    """Prefix for `tempfile.mkstemp`: the kind of file and this process's pid."""
    return f"{_PREFIX}{kind}-{os.getpid()}-"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def sweep_orphans(directory: str | None = None) -> int:
    """Delete the temporary files of processes that no longer run; how many were deleted.

    A file named with this process's own pid goes too when it is older than this process
    (a restarted container reuses pids).
    """
    folder = directory or tempfile.gettempdir()
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        log.warning("cannot list %s for leftover temporary files: %s", folder, exc)
        return 0
    for entry in entries:
        match = _NAME.match(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            continue
        pid = int(match[1])
        if pid == os.getpid():
            try:
                if entry.stat(follow_symlinks=False).st_mtime >= _STARTED_AT:
                    continue  # one of ours, in use
            except FileNotFoundError:
                continue
        elif _running(pid):
            continue
        try:
            os.unlink(entry.path)
            removed += 1
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot delete leftover %s: %s", entry.path, exc)
    if removed:
        log.info("deleted %d temporary file(s) left by processes that were killed", removed)
    return removed

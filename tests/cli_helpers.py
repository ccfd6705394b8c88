"""Running the command line as a user does: a child process with a clean environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_cli(
    database_url: str | None, *args: str, cwd: Path = ROOT, **env_extra: str
) -> subprocess.CompletedProcess[str]:
    """`python -m service.cli ARGS` against `database_url` (None: the command's own default),
    with none of the caller's database or API settings leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "API_", "DB_"))}
    env["PYTHONPATH"] = str(ROOT)
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )

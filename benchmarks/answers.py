"""Benchmark answers as sorted JSON lines, so that two versions of the code can be compared.

The accuracy, streams and latency benchmarks write, with `--answers FILE`, one line per answer
(which song, where in it, how sure), keyed so that the same question has the same key in every
run, and sorted by that key: two files from two versions of the code diff line by line, and
`benchmarks/compare_answers.py` compares them field by field. Timings never go in: they differ
from run to run whatever the code does.

The first line is `{"meta": {...}}`: the benchmark, its command line and the commit it ran at.
Every other line is an object with a `key` (a list naming the question) and the answer's fields.
"""

from __future__ import annotations

import json
import math
import shlex
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from service.match import Match

ROOT = Path(__file__).resolve().parents[1]


def match_fields(match: Match) -> dict[str, Any]:
    """What a match answers, without its song: where in the song, how sure, at what speed."""
    return {
        "song_offset_s": match.song_offset_s,
        "confidence": match.confidence,
        "score": match.score,
        "speed": match.speed,
        "evidence": match.evidence,
        "query_start_s": match.query_start_s,
        "query_end_s": match.query_end_s,
    }


def commit() -> str:
    """The checked-out commit, with `+dirty` when the work tree has changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def _plain(value: Any) -> Any:
    """numpy scalars and tuples as JSON's own types; NaN and infinities as null."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _order(row: dict[str, Any]) -> list[tuple[int, Any]]:
    # Numbers before strings before null at each position, so mixed keys still sort.
    out: list[tuple[int, Any]] = []
    for part in row["key"]:
        if isinstance(part, bool) or part is None:
            out.append((2, str(part)))
        elif isinstance(part, int | float):
            out.append((0, part))
        else:
            out.append((1, str(part)))
    return out


def write_answers(
    path: str | Path, benchmark: str, rows: Iterable[dict[str, Any]], at_commit: str | None = None
) -> int:
    """Write `rows` (each with a unique `key`) sorted by key, after a meta line; rows written.

    `at_commit`: the commit the run started at (`commit()` then), else the one checked out now.
    """
    plain = [_plain(r) for r in rows]
    plain.sort(key=_order)
    keys = [json.dumps(r["key"]) for r in plain]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{benchmark}: answers with the same key")
    meta = {
        "benchmark": benchmark,
        "commit": at_commit or commit(),
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "answers": len(plain),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        f.write(json.dumps({"meta": meta}, sort_keys=True) + "\n")
        for row in plain:
            f.write(json.dumps(row, sort_keys=True, allow_nan=False) + "\n")
    print(f"{len(plain)} answers written to {path}", file=sys.stderr)
    return len(plain)


def read_answers(path: str | Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(meta, rows by their key as JSON text) of an answers file."""
    meta: dict[str, Any] = {}
    rows: dict[str, dict[str, Any]] = {}
    with Path(path).open() as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if "meta" in row:
                meta = row["meta"]
                continue
            key = json.dumps(row.get("key"))
            if "key" not in row or key in rows:
                raise ValueError(f"{path}:{number}: a row without a key or with a repeated one")
            rows[key] = row
    return meta, rows

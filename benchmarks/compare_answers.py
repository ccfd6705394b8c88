"""Compare two answers files of a benchmark (`--answers`): did the code answer the same?

    python -m benchmarks.compare_answers BEFORE.jsonl AFTER.jsonl [--tolerance 1e-9] [--show 30]

Rows are paired by their key. Songs, statuses, evidence, scores and every other string, integer,
boolean or null compare exactly, and so do the number of matches or plays (a key present on one
side only is a difference); numbers with a fraction (offsets, confidences, speeds, times)
compare within `--tolerance`, absolute. Prints how many answers were compared, how many differ,
which fields differ how often, and the first differences; exits 1 when any differ, 2 when the
files are not answers of the same benchmark.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any

from benchmarks.answers import read_answers


def differences(a: Any, b: Any, tolerance: float, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(field path, value in a, value in b) for every field that differs."""
    if isinstance(a, dict) and isinstance(b, dict):
        for name in sorted(a.keys() | b.keys()):
            where = f"{path}.{name}" if path else name
            if name not in a or name not in b:
                yield where, a.get(name, "<absent>"), b.get(name, "<absent>")
            else:
                yield from differences(a[name], b[name], tolerance, where)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            yield f"{path}[len]", len(a), len(b)
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            yield from differences(x, y, tolerance, f"{path}[{i}]")
    elif _fractional(a) and _fractional(b) and (isinstance(a, float) or isinstance(b, float)):
        if not (a == b or abs(a - b) <= tolerance):
            yield path, a, b
    elif type(a) is not type(b) or a != b:
        yield path, a, b


def _fractional(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _field(path: str) -> str:
    """A difference's field without list positions (`matches[2].score` -> `matches.score`)."""
    out, depth = [], 0
    for ch in path:
        depth += ch == "["
        if not depth:
            out.append(ch)
        depth -= ch == "]"
    return "".join(out) + ("[len]" if path.endswith("[len]") else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("a", help="answers file (before)")
    parser.add_argument("b", help="answers file (after)")
    parser.add_argument("--tolerance", type=float, default=1e-9, help="for fractional numbers")
    parser.add_argument("--show", type=int, default=30, help="differences printed at most")
    args = parser.parse_args(argv)
    try:
        meta_a, rows_a = read_answers(args.a)
        meta_b, rows_b = read_answers(args.b)
    except (OSError, ValueError) as exc:
        print(f"cannot read the answers: {exc}")
        return 2
    for label, meta in (("A", meta_a), ("B", meta_b)):
        print(f"{label}: {meta.get('benchmark', '?')} at {meta.get('commit', '?')}: "
              f"{meta.get('command', '?')}")  # fmt: skip
    if meta_a.get("benchmark") != meta_b.get("benchmark"):
        print("not answers of the same benchmark")
        return 2
    only_a = sorted(rows_a.keys() - rows_b.keys())
    only_b = sorted(rows_b.keys() - rows_a.keys())
    common = sorted(rows_a.keys() & rows_b.keys())
    fields: Counter[str] = Counter()
    shown: list[str] = []
    differing = 0
    for key in common:
        found = list(differences(rows_a[key], rows_b[key], args.tolerance))
        if not found:
            continue
        differing += 1
        for where, x, y in found:
            fields[_field(where)] += 1
            if len(shown) < args.show:
                shown.append(f"  {key} {where}: {json.dumps(x)} != {json.dumps(y)}")
    for side, keys in (("A", only_a), ("B", only_b)):
        for key in keys[: max(0, args.show - len(shown))]:
            shown.append(f"  {key}: only in {side}")
    print(
        f"{len(common)} answers compared, {differing} differ; {len(only_a)} only in A, "
        f"{len(only_b)} only in B (tolerance {args.tolerance:g} on fractional numbers)"
    )
    if fields:
        print("differing fields: " + ", ".join(f"{f} x{n}" for f, n in fields.most_common()))
    if shown:
        print("first differences:")
        print("\n".join(shown))
    same = not (differing or only_a or only_b)
    print("SAME" if same else "DIFFERENT")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

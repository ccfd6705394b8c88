"""Write one marked table into a given section of BENCHMARKS.md.

Every benchmark's `--write` goes through here: each table lives between its own markers inside
its section, next to tables other benchmarks maintain there.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def this_command(module: str, corpus: str | os.PathLike[str] | None = None) -> str:
    """The command line that produced a table, ready to paste: this run's arguments, quoted,
    without `--write`, after the corpus folder it read (`corpus`, else $CORPUS_DIR)."""
    corpus = corpus if corpus is not None else os.environ.get("CORPUS_DIR")
    prefix = f"CORPUS_DIR={shlex.quote(os.fspath(corpus))} " if corpus else ""
    arguments = shlex.join(a for a in sys.argv[1:] if a != "--write")
    return f"{prefix}python -m {module} {arguments}".rstrip()


def write_section(marker: str, heading: str, command: str, lines: list[str]) -> None:
    """Replace the `marker` block, or insert it at the end of the `heading` section."""
    text = BENCHMARKS_MD.read_text()
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    body = "\n".join([start, "", f"Command: `{command}`", "", *lines, "", end])
    if start in text and end in text:
        text = text[: text.index(start)] + body + text[text.index(end) + len(end) :]
    elif heading in text:
        after = text.index(heading) + len(heading)
        nxt = text.find("\n## ", after)
        cut = len(text.rstrip("\n")) if nxt < 0 else nxt
        text = text[:cut].rstrip("\n") + "\n\n" + body + "\n" + text[cut:]
        text = text.rstrip("\n") + "\n"
    else:
        text = text.rstrip("\n") + f"\n\n{heading}\n\n{body}\n"
    BENCHMARKS_MD.write_text(text)


def publish_catalogue_table(
    lines: list[str], args: argparse.Namespace, name: str, heading: str
) -> None:
    """Print the table benchmarks.`name` measured on the catalogue `args.database` and, with
    `args.write`, put it in that catalogue's block of the `heading` section of BENCHMARKS.md
    (one block per catalogue: its database's name tells the format and the size)."""
    print("\n".join(lines))
    if args.write:
        marker = f"{name}_{args.database.rsplit('/', 1)[-1]}"
        write_section(marker, heading, this_command(f"benchmarks.{name}"), lines)

"""Finding the numbered SQL migrations of each dialect.

Migrations are forward-only plain SQL files, `NNNN_name.sql`, never edited once merged; the
version recorded in `schema_migrations` is the file name without `.sql`. Both dialects share one
numbering: a number names the same step in each, and a dialect with nothing to do for a step
has a file holding only a comment that says why. Applying them is the store's job (each dialect
locks differently); this module only says which exist, in order.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Dialect = Literal["postgres", "sqlite"]

_NAME = re.compile(r"^(\d{4})_[A-Za-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    #: File name without `.sql`, e.g. `0001_init`; the key in `schema_migrations`.
    version: str
    path: Path

    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")


def migrations_root() -> Path:
    """`MIGRATIONS_DIR` if set (an installed wheel has no source tree), else the repo's folder."""
    override = os.environ.get("MIGRATIONS_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "migrations"


def list_migrations(dialect: Dialect, root: Path | None = None) -> list[Migration]:
    """Every migration of `dialect`, oldest first.

    A missing folder is an error rather than "nothing to apply": otherwise a misplaced
    deployment would report itself ready against an empty database.
    """
    folder = (root or migrations_root()) / dialect
    if not folder.is_dir():
        raise FileNotFoundError(f"no migrations folder at {folder} (set MIGRATIONS_DIR)")
    found: dict[str, Path] = {}
    for path in folder.glob("*.sql"):
        match = _NAME.match(path.name)
        if match is None:
            raise ValueError(f"migration {path} is not named NNNN_name.sql")
        number = match.group(1)
        if number in found:
            raise ValueError(f"migrations {found[number]} and {path} share the number {number}")
        found[number] = path
    return [Migration(found[n].stem, found[n]) for n in sorted(found)]

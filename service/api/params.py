"""Path and query parameters with the bounds both stores can hold.

Numbers in URLs are whole decimal numbers: pydantic's lax parsing would take `1.0`, `+1` or
`1_000` for an id, and an id past what PostgreSQL's columns hold would fail in the database
instead of being refused here.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import BeforeValidator

from service.store import MAX_ROW_ID

#: Play ids are `bigint` in PostgreSQL and SQLite's 64-bit integers.
MAX_PLAY_ID = (1 << 63) - 1
#: Offsets past any catalogue or log this service can hold.
MAX_OFFSET = MAX_ROW_ID


def _whole_number(value: Any) -> Any:
    if isinstance(value, str):
        if not (value.isascii() and value.isdigit()) or len(value) > 19:
            raise ValueError("must be a whole decimal number of at most 19 digits")
        return int(value)
    return value


WholeNumber = BeforeValidator(_whole_number)

SongId = Annotated[int, WholeNumber, Path(ge=1, le=MAX_ROW_ID, description="Song id.")]
PlayId = Annotated[int, WholeNumber, Path(ge=1, le=MAX_PLAY_ID, description="Play id.")]
Offset = Annotated[
    int, WholeNumber, Query(ge=0, le=MAX_OFFSET, description="Items to skip before the page.")
]

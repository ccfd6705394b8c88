"""What both stores accept and how they answer, so that the two backends behave alike: the
largest ids and frames, text without NUL, the editable song fields, fingerprints kept once, and
which hashes a capped lookup leaves out."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from service.arrays import unique_values
from service.audio.hashes import Fingerprints
from service.errors import InvalidInput
from service.store.records import EDITABLE_FIELDS, Hits, LeftOut

#: Largest frame either store accepts: PostgreSQL postings hold 24 bits (149 hours of audio),
#: and SQLite refuses the same, so that both backends behave alike.
MAX_STORED_FRAME = (1 << 24) - 1


def unique_fingerprints(fingerprints: Fingerprints) -> tuple[np.ndarray, np.ndarray]:
    """(hashes, frames) as int32 without repeated pairs, sorted by hash then frame.

    Both stores keep each (hash, song, frame) once so that fingerprint_count and lookups agree
    across backends; hash order also makes the index inserts nearly sequential. Raises
    ValueError for a frame outside 0..MAX_STORED_FRAME.
    """
    offsets = fingerprints.offsets
    if len(offsets) and (offsets.min() < 0 or offsets.max() > MAX_STORED_FRAME):
        raise ValueError(f"fingerprint frames must lie in 0..{MAX_STORED_FRAME}")
    key = (fingerprints.hashes.astype(np.int64) << 32) | (
        fingerprints.offsets.astype(np.int64) & 0xFFFFFFFF
    )
    key = unique_values(key)
    return (key >> 32).astype(np.int32), (key & 0xFFFFFFFF).astype(np.uint32).view(np.int32)


#: Largest row id either store accepts (PostgreSQL's `integer` ids); anything larger names no
#: row in either, rather than failing in one of them.
MAX_ROW_ID = (1 << 31) - 1


def valid_id(row_id: int) -> bool:
    return 1 <= row_id <= MAX_ROW_ID


def reject_nul(*values: str | None) -> None:
    """Raise InvalidInput (422) for text with a NUL character: PostgreSQL cannot store one in
    `text`, so neither store accepts it (nor looks it up)."""
    if any(value is not None and "\x00" in value for value in values):
        raise InvalidInput("text must not contain NUL characters (\\u0000)")


def editable_changes(fields: dict[str, str | None]) -> list[str]:
    """Names of the columns `fields` sets, in EDITABLE_FIELDS order (safe to put in SQL).

    Raises InvalidInput (422) for a field clients may not set, an empty title (every song
    must be listable by name) or text with a NUL character.
    """
    reject_nul(*fields.values())
    unknown = set(fields) - set(EDITABLE_FIELDS)
    if unknown:
        raise InvalidInput(f"not editable: {', '.join(sorted(unknown))}")
    if "title" in fields and not (fields["title"] or "").strip():
        raise InvalidInput("title cannot be empty")
    return [name for name in EDITABLE_FIELDS if name in fields]


def drop_frequent(hits: Hits, max_postings: int | None, max_hits: int | None = None) -> Hits:
    """`hits` without the hashes that have more than `max_postings` of them, nor the most
    frequent ones past `max_hits` in all (see `kept_hashes`), for stores that cannot leave
    them out while reading; those the budget left out are the result's `left_out` (its
    catalogue_frames still 0, for the store to fill in)."""
    if len(hits) == 0 or (max_postings is None and max_hits is None):
        return hits
    values, inverse, counts = np.unique(hits.hashes, return_inverse=True, return_counts=True)
    kept = kept_hashes(values, counts, max_postings, max_hits)
    if kept.all():
        return hits
    budgeted = ~kept & (counts <= max_postings if max_postings is not None else True)
    left_out = LeftOut(values[budgeted].astype(np.int64), counts[budgeted].astype(np.int64))
    return replace(hits.select(kept[inverse]), left_out=left_out)


def kept_hashes(
    values: np.ndarray, counts: np.ndarray, max_postings: int | None, max_hits: int | None
) -> np.ndarray:
    """Mask of the distinct hash `values` (with `counts` postings each) a lookup returns: those
    with at most `max_postings`, and of those the rarest first (ties: the lower hash) while
    their postings add up to at most `max_hits` (MatchParams.max_hits_per_lookup). The
    PostgreSQL lookup statement applies the same rule."""
    keep = counts <= max_postings if max_postings is not None else np.ones(len(counts), bool)
    if max_hits is not None and int(counts[keep].sum()) > max_hits:
        order = np.lexsort((values, counts))
        order = order[keep[order]]
        over = np.cumsum(counts[order]) > max_hits
        keep[order[over]] = False
    return keep

"""The uploaded objects the worker processes, as both sides of it speak of them.

The AWS side turns notification JSON into these (`aws/events.py`) and downloads the objects
they name (`aws/objects.py`); the worker decides from them what to do and writes what they
were into its reports (`schemas.SourceObject`). They are the worker's vocabulary, but the AWS
side produces them, and the adapters never import one another, so they live here, beside
`schemas.py`: plain data, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


class PoisonMessage(ValueError):
    """The body is not an event this worker understands; retrying cannot change that."""


@dataclass(frozen=True)
class ObjectCreated:
    """One uploaded object, as announced (the key already URL-decoded)."""

    bucket: str
    key: str
    etag: str | None = None
    version_id: str | None = None
    sequencer: str | None = None
    size_bytes: int | None = None

    @property
    def version_token(self) -> str | None:
        """What tells this upload of `key` from another: the version id on a versioned bucket,
        else S3's sequencer (ordered per key), else the content's ETag."""
        if self.version_id and self.version_id != "null":
            return f"v:{self.version_id}"
        if self.sequencer:
            return f"s:{self.sequencer}"
        if self.etag:
            return f"e:{self.etag}"
        return None


@dataclass(frozen=True)
class ParsedMessage:
    """What one queue message announces."""

    objects: list[ObjectCreated] = field(default_factory=list)
    #: Events understood but not acted on (test events, deletions), one reason each.
    ignored: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Downloaded:
    """An object's content in a local temporary file, with what S3 said about it."""

    path: str
    etag: str | None
    version_id: str | None
    metadata: dict[str, str] = field(default_factory=dict)
    #: When the upload completed (S3 Last-Modified); a live segment's end on the wall clock.
    last_modified: datetime | None = None

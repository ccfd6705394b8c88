"""S3 keys of live-stream segments -> (stream name, sequence number).

A MediaLive archive output group writes `<destination><name modifier>.<NNNNNN>.ts`, so with the
destination `s3://BUCKET/songs_to_check/streams/<stream>` three layouts occur:

    songs_to_check/streams/stream1.000123.ts        stream "stream1",    sequence 123
    songs_to_check/streams/stream1_hd.000123.ts     stream "stream1_hd", sequence 123
    songs_to_check/streams/stream1/seg.000123.ts    stream "stream1",    sequence 123

The rule: the sequence number is the run of digits between the last two dots of the file
name. A key with a folder under `streams/` belongs to the stream named by that folder (the
file's base name is ignored); a key directly under `streams/` belongs to the stream named by
the file name before the sequence number, name modifier included, because a channel with
several outputs writes one rendition per modifier and two renditions must not be mixed into
one timeline. Names keep their case and may use letters, digits, `.`, `_` and `-`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from service.errors import BadRequest

STREAMS_PREFIX = "songs_to_check/streams/"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_FILE = re.compile(r"^(?P<base>.*)\.(?P<seq>\d{1,18})\.[A-Za-z0-9]+$")


class BadStreamKey(BadRequest):
    """A key under songs_to_check/streams/ that names no stream segment."""

    code = "bad_stream_key"


@dataclass(frozen=True)
class SegmentKey:
    stream: str
    sequence: int


def parse_segment_key(key: str) -> SegmentKey:
    """Stream name and sequence number of a segment key (see the module docstring)."""
    if not key.lower().startswith(STREAMS_PREFIX):
        raise BadStreamKey(f"{key!r} is not under {STREAMS_PREFIX}")
    rest = key[len(STREAMS_PREFIX) :]
    parts = rest.split("/")
    if len(parts) > 2 or not all(parts):
        raise BadStreamKey(
            f"{key!r}: expected streams/<stream>.<sequence>.ts or "
            "streams/<stream>/<name>.<sequence>.ts"
        )
    match = _FILE.match(parts[-1])
    if match is None:
        raise BadStreamKey(
            f"{key!r}: the file name has no sequence number (<name>.<digits>.<suffix>, "
            "as MediaLive archive outputs write)"
        )
    stream = parts[0] if len(parts) == 2 else match.group("base")
    if not _NAME.match(stream):
        raise BadStreamKey(
            f"{key!r}: stream name {stream!r} must be 1-200 letters, digits, '.', '_' or '-'"
        )
    return SegmentKey(stream=stream, sequence=int(match.group("seq")))

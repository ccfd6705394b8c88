"""Live-stream segments (`songs_to_check/streams/...`): PLACEHOLDER entry point.

A later issue builds the stream pipeline (segments stitched per stream, songs followed across
segment boundaries, plays reported with wall-clock times). Until then the worker routes each
segment here, the segment is identified like any clip, and the worker keeps the result in its
ledger (`processed_objects.result_json`, kind `stream_segment`): the segment's matches are
stored, and neither a report file nor an SNS message is produced for streams yet.
"""

from __future__ import annotations

import os

from service.core.catalogue import IdentifyResult, identify_file
from service.core.cpu import CpuPool
from service.matching import MatchParams
from service.store.base import Store


async def process_stream_segment(
    store: Store,
    pool: CpuPool,
    bucket: str,
    key: str,
    local_path: str | os.PathLike[str],
    match_params: MatchParams,
) -> IdentifyResult:
    """Identify one stream segment downloaded to `local_path` from `s3://bucket/key`.

    `bucket` and `key` name the stream and the segment's place in it; the placeholder does
    not use them yet.
    """
    del bucket, key  # the stream pipeline will key its state on them
    return await identify_file(store, pool, local_path, match_params)

"""Index a song: analysed audio -> a catalogue entry (metadata, fingerprints, envelopes).

The HTTP API, the CLI and the SQS worker all call these, so a song indexed by any of them is
found by all of them the same way.
"""

from __future__ import annotations

import logging
import os
import time
from functools import partial
from pathlib import PurePath

from service.audio.analysis import AnalysedAudio, analyse_file
from service.audio.envelopes import DEFAULT_ENVELOPE
from service.audio.params import DEFAULT_PARAMS, FingerprintParams
from service.errors import NoFingerprints
from service.executor import CpuPool
from service.store import NewSong, Song, SongMeta, Store
from service.telemetry import metrics

log = logging.getLogger(__name__)


def _clean(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def _found(value: str | None) -> str | None:
    """A value the caller did not choose (a tag, a file name): NUL characters, which no
    store keeps, are dropped rather than refused."""
    return _clean((value or "").replace("\x00", ""))


def resolve_meta(given: SongMeta | None, tags: dict[str, str], filename: str | None) -> SongMeta:
    """Metadata precedence: what the caller gave, then the file's tags, then its name."""
    given = given or SongMeta(title="")
    stem = PurePath(filename).stem if filename else ""
    title = _clean(given.title) or _found(tags.get("title")) or _found(stem) or "Untitled"
    return SongMeta(
        title=title,
        artist=_clean(given.artist) or _found(tags.get("artist")),
        album=_clean(given.album) or _found(tags.get("album")),
        isrc=_clean(given.isrc) or _found(tags.get("isrc")),
        external_id=_clean(given.external_id),
    )


async def index_analysed(
    store: Store, audio: AnalysedAudio, meta: SongMeta | None, filename: str | None
) -> tuple[Song, bool]:
    """Store analysed audio as a song; returns (song, created). Same content -> same song."""
    existing = await store.find_by_content(audio.content_sha256)
    if existing is not None:
        if audio.envelope is not None:
            # A song indexed before band envelopes were stored gets them now.
            await store.set_song_envelope(existing.id, audio.envelope, audio.envelope_format)
        return existing, False
    if len(audio.fingerprints) == 0:
        raise NoFingerprints("the audio yields no fingerprints (silence or a steady tone?)")
    return await store.add_song(
        NewSong(
            meta=resolve_meta(meta, audio.tags, filename),
            duration_s=audio.duration_s,
            n_frames=audio.n_frames,
            content_sha256=audio.content_sha256,
            fingerprints=audio.fingerprints,
            envelope=audio.envelope,
            envelope_format=audio.envelope_format,
        )
    )


async def index_file(
    store: Store,
    pool: CpuPool,
    path: str | os.PathLike[str],
    meta: SongMeta | None = None,
    filename: str | None = None,
    params: FingerprintParams = DEFAULT_PARAMS,
    max_audio_s: float | None = None,
) -> tuple[Song, bool]:
    """Index a file; AudioTooLong when it decodes to more than `max_audio_s`."""
    started = time.perf_counter()
    audio = await pool.run(
        partial(analyse_file, os.fspath(path), params, DEFAULT_ENVELOPE, max_duration_s=max_audio_s)
    )
    song, created = await index_analysed(store, audio, meta, filename or os.fspath(path))
    metrics.record_index(created)
    log.info(
        "%s song %d: %s",
        "indexed" if created else "already had",
        song.id,
        song.title,
        extra={
            "event": "index.result",
            "song_id": song.id,
            "title": song.title,
            "artist": song.artist,
            "song_created": created,
            "fingerprints": song.fingerprint_count,
            "duration_s": round(song.duration_s, 3),
            "elapsed_ms": round((time.perf_counter() - started) * 1000.0, 1),
        },
    )
    return song, created

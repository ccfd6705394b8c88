"""Index a song: analysed audio -> a catalogue entry (metadata, fingerprints, envelopes).

The HTTP API, the CLI and the SQS worker all call these, so a song indexed by any of them is
found by all of them the same way.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import PurePath

import numpy as np

from service.audio.analysis import AnalysedAudio, PhaseAnalysis, analyse_at_phases, analyse_file
from service.audio.envelopes import DEFAULT_ENVELOPE
from service.audio.hashes import Fingerprints
from service.audio.params import FingerprintParams
from service.errors import NoFingerprints
from service.executor import CpuPool
from service.match.duplicates import DuplicateParams, Overlap, overlaps, sampled
from service.store import Hits, NewSong, Song, SongMeta, Store
from service.telemetry import metrics

log = logging.getLogger(__name__)

#: Most postings a duplicate check's lookup returns (the rarest hashes kept first).
DUPLICATE_LOOKUP_MAX_HITS = 2_000_000


@dataclass(frozen=True)
class Indexed:
    """What indexing did: the song (new, or the one already holding this audio), whether it
    was created, and, when the audio is a near-duplicate of a stored song (the same
    recording, not the same bytes), how much of each the other covers."""

    song: Song
    created: bool
    duplicate: Overlap | None = None


@dataclass(frozen=True)
class IndexOptions:
    """How to index one piece of audio."""

    meta: SongMeta | None = None
    #: The file's own name (metadata falls back to it).
    filename: str | None = None
    #: Where the audio came from and the SHA-256 of that file, kept with a new song.
    source: str | None = None
    file_sha256: str | None = None
    #: Index it even when a stored song is the same recording (a near-duplicate).
    allow_duplicate: bool = False
    #: Store the new song under this id (reindex).
    song_id: int | None = None
    #: Keep `meta` exactly as given (a rebuilt or restored catalogue), never completed from
    #: the file's tags or name.
    exact_meta: bool = False


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def analyse_source(
    path: str, params: FingerprintParams, max_audio_s: float | None = None
) -> tuple[AnalysedAudio, str]:
    """A file's analysis and the SHA-256 of its bytes (run in a pool process)."""
    digest = file_sha256(path)
    audio = analyse_file(path, params, DEFAULT_ENVELOPE, max_duration_s=max_audio_s)
    return audio, digest


#: Given `hop_phases`, the new song's audio analysed again on the frame grids of its other
#: hop phases (analyse_at_phases): for a candidate it lines up with but keeps too few
#: landmarks of.
PhaseAnalyser = Callable[[int], Awaitable[list[PhaseAnalysis]]]


def phase_analyser(
    pool: CpuPool,
    path: str | os.PathLike[str],
    params: FingerprintParams,
    max_audio_s: float | None = None,
) -> PhaseAnalyser:
    """A PhaseAnalyser that decodes `path` again on the pool (it must still exist when called)."""

    async def analyse(hop_phases: int) -> list[PhaseAnalysis]:
        shifts = params.hop_phase_shifts(hop_phases)
        return await pool.run(
            partial(analyse_at_phases, os.fspath(path), params, shifts, max_audio_s)
        )

    return analyse


async def _hits(
    store: Store, fp: Fingerprints, exclude: int | None, only: set[int] | None = None
) -> Hits:
    """The stored postings of `fp`'s hashes, without song `exclude`, of songs `only`."""
    # No cap on frequent hashes, only a budget: a copy's frequent landmarks line up like its
    # rare ones, and the share of landmarks that line up is part of the verdict.
    hits = await store.lookup(np.unique(fp.hashes), None, DUPLICATE_LOOKUP_MAX_HITS)
    if len(hits) == 0 or (exclude is None and only is None):
        return hits
    keep = hits.song_ids != exclude
    if only is not None:
        keep &= np.isin(hits.song_ids, np.fromiter(only, dtype=np.int64))
    return hits.select(keep)


async def compare_recordings(
    store: Store,
    audio: AnalysedAudio,
    params: DuplicateParams | None = None,
    *,
    exclude: int | None = None,
    phases: PhaseAnalyser | None = None,
) -> list[Overlap]:
    """The stored songs lining up best with `audio`, duplicates or not, each at its best
    offset, the most covered first (service/match/duplicates.py); `exclude` leaves one song
    out (the song itself, when a catalogue is checked).

    A candidate that lines up over most of both songs but keeps fewer than
    `min_aligned_share` of the landmarks is measured again on the new song's other hop
    phases (`phases`, when given) and kept at its best: a copy whose start moved by a
    fraction of a frame keeps few landmarks on its own grid only because the spectrogram
    samples other instants there. (An overlap measured on a shifted grid counts its offset
    in that grid's frames, less than a frame from the own grid's.)"""
    params = params or DuplicateParams()
    fp = sampled(audio.fingerprints, params)
    if len(fp) == 0:
        return []
    frame_s = audio.frame_s
    hits = await _hits(store, fp, exclude)
    found = await asyncio.to_thread(overlaps, fp, audio.n_frames, hits, frame_s, params)
    short = {o.song_id for o in found if o.is_covered(params) and not o.is_duplicate(params)}
    if not short or phases is None or params.hop_phases <= 1:
        return found
    best = {o.song_id: o for o in found}
    for analysis in await phases(params.hop_phases):
        phase_fp = sampled(analysis.fingerprints, params)
        hits = await _hits(store, phase_fp, exclude, short)
        again = await asyncio.to_thread(
            overlaps, phase_fp, analysis.n_frames, hits, frame_s, params
        )
        for o in again:
            if (o.is_covered(params), o.aligned_share) > (
                best[o.song_id].is_covered(params),
                best[o.song_id].aligned_share,
            ):
                best[o.song_id] = o
    return sorted(
        best.values(), key=lambda o: (-min(o.new_coverage, o.stored_coverage), -o.aligned_share)
    )


async def find_duplicate(
    store: Store,
    audio: AnalysedAudio,
    params: DuplicateParams | None = None,
    *,
    exclude: int | None = None,
    phases: PhaseAnalyser | None = None,
) -> Overlap | None:
    """The stored song that is the same recording as `audio`, if any (compare_recordings)."""
    params = params or DuplicateParams()
    found = await compare_recordings(store, audio, params, exclude=exclude, phases=phases)
    return next((o for o in found if o.is_duplicate(params)), None)


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


async def index_song(
    store: Store,
    audio: AnalysedAudio,
    options: IndexOptions,
    *,
    phases: PhaseAnalyser | None = None,
) -> Indexed:
    """Store analysed audio as a song. The same decoded audio is the same song; so is the
    same recording in other bytes (re-encoded, resampled, quieter, silence trimmed) unless
    `options.allow_duplicate`: then the stored song comes back, with the overlap. `phases`
    analyses the audio again at other hop phases when the duplicate check needs it
    (compare_recordings); without it a copy shifted by a fraction of a frame can be missed."""
    existing = await store.find_by_content(audio.content_sha256)
    if existing is not None:
        if audio.envelope is not None:
            # A song indexed before band envelopes were stored gets them now.
            await store.set_song_envelope(existing.id, audio.envelope, audio.envelope_format)
        return Indexed(existing, False)
    if len(audio.fingerprints) == 0:
        raise NoFingerprints("the audio yields no fingerprints (silence or a steady tone?)")
    if not options.allow_duplicate:
        overlap = await find_duplicate(store, audio, phases=phases)
        if overlap is not None:
            original = await store.get_song(overlap.song_id)
            if original is not None:
                return Indexed(original, False, overlap)
    meta = options.meta
    if meta is None or not (options.exact_meta and meta.title):
        meta = resolve_meta(options.meta, audio.tags, options.filename)
    song, created = await store.add_song(
        NewSong(
            meta=meta,
            duration_s=audio.duration_s,
            n_frames=audio.n_frames,
            content_sha256=audio.content_sha256,
            fingerprints=audio.fingerprints,
            envelope=audio.envelope,
            envelope_format=audio.envelope_format,
            source=options.source,
            file_sha256=options.file_sha256,
            song_id=options.song_id,
        )
    )
    return Indexed(song, created)


async def index_analysed(
    store: Store, audio: AnalysedAudio, meta: SongMeta | None, filename: str | None
) -> tuple[Song, bool]:
    """Store analysed audio as a song; returns (song, created) (see index_song)."""
    indexed = await index_song(store, audio, IndexOptions(meta=meta, filename=filename))
    return indexed.song, indexed.created


async def index_path(
    store: Store,
    pool: CpuPool,
    path: str | os.PathLike[str],
    options: IndexOptions,
    *,
    params: FingerprintParams,
    max_audio_s: float | None = None,
) -> Indexed:
    """Analyse a file on the pool and index it (index_song); logged and counted."""
    started = time.perf_counter()
    audio = await pool.run(
        partial(analyse_file, os.fspath(path), params, DEFAULT_ENVELOPE, max_duration_s=max_audio_s)
    )
    phases = phase_analyser(pool, path, params, max_audio_s)
    indexed = await index_song(store, audio, options, phases=phases)
    song, created = indexed.song, indexed.created
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
            "duplicate_of": None if indexed.duplicate is None else indexed.duplicate.song_id,
            "fingerprints": song.fingerprint_count,
            "duration_s": round(song.duration_s, 3),
            "elapsed_ms": round((time.perf_counter() - started) * 1000.0, 1),
        },
    )
    return indexed

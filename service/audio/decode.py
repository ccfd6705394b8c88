"""Bytes -> mono samples at the fingerprint rate.

PyAV (FFmpeg) demuxes and decodes any common container and codec (MP3, AAC in ADTS/MP4/MPEG-TS,
Ogg Vorbis, Opus, FLAC, WAV, ...); soxr resamples. Decoding streams about a second at a time
(downmix.py) through a streaming resampler, so a one-hour upload never holds more than the 8 kHz
mono result.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field
from typing import BinaryIO

import av
import numpy as np
import soxr

from service.audio.downmix import MonoBatch
from service.errors import EmptyFile, NotAudio, UndecodableAudio

Source = str | os.PathLike[str] | bytes | BinaryIO

#: Tags copied from the container (lower-cased FFmpeg names, ID3 frame names as fallbacks).
_TAG_ALIASES: dict[str, tuple[str, ...]] = {
    "title": ("title", "tit2"),
    "artist": ("artist", "tpe1", "album_artist"),
    "album": ("album", "talb"),
    "isrc": ("isrc", "tsrc"),
}


@dataclass
class DecodedAudio:
    """Mono float32 samples in [-1, 1] at `sample_rate_hz`, plus what the container told us."""

    samples: np.ndarray
    sample_rate_hz: int
    #: sha256 of the samples quantised to int16: identical audio in another container (or the
    #: same file uploaded twice) gets the same digest, which makes re-indexing idempotent.
    content_sha256: str
    #: Presentation time (s) of the first decoded audio sample; MPEG-TS segments carry the
    #: stream clock here, which places live segments on their stream's timeline.
    start_pts_s: float | None = None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate_hz


class _GrowingBuffer:
    """Amortised O(1) append of float32 chunks without keeping a list of them alive."""

    def __init__(self, capacity: int) -> None:
        self._data = np.empty(max(capacity, 1024), dtype=np.float32)
        self._size = 0

    def append(self, chunk: np.ndarray) -> None:
        need = self._size + len(chunk)
        if need > len(self._data):
            grown = np.empty(max(need, int(len(self._data) * 1.5)), dtype=np.float32)
            grown[: self._size] = self._data[: self._size]
            self._data = grown
        self._data[self._size : need] = chunk
        self._size = need

    def result(self) -> np.ndarray:
        view = self._data[: self._size]
        # Don't pin a buffer sized from an over-estimated container duration.
        return view.copy() if self._size < len(self._data) // 2 else view


#: libavformat reads up to 5 MB while probing a file for its streams' parameters by default.
#: For PCM in WAV that means decoding a whole 10-s clip before decoding it (10 ms of a 40-ms
#: identification), although the header already says everything. A short probe is tried
#: first; the default one only when it leaves the audio stream missing or incomplete.
_QUICK_PROBE = {"probesize": "32768"}


def _complete(container: av.container.InputContainer) -> bool:
    if not container.streams.audio:
        return False
    stream = container.streams.audio[0]
    context = stream.codec_context
    return bool(stream.rate or context.sample_rate) and context.format is not None


def _open(source: Source) -> av.container.InputContainer:
    if isinstance(source, bytes | bytearray):
        if not source:
            raise EmptyFile("the uploaded file is empty")
    elif isinstance(source, str | os.PathLike) and os.path.getsize(source) == 0:
        raise EmptyFile("the uploaded file is empty")

    def attempt(options: dict[str, str]) -> av.container.InputContainer:
        if isinstance(source, bytes | bytearray):
            readable: str | os.PathLike[str] | BinaryIO = io.BytesIO(source)
        else:
            readable = source
            if hasattr(readable, "seek"):
                readable.seek(0)
        return av.open(readable, mode="r", metadata_errors="ignore", options=options)

    try:
        container = attempt(_QUICK_PROBE)
        if _complete(container):
            return container
        container.close()
    except (av.error.FFmpegError, ValueError, OSError):
        pass  # the full probe below decides, and reports
    try:
        return attempt({})
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise NotAudio(f"not a recognised audio or video container: {exc}") from exc


def _read_tags(container: av.container.InputContainer, stream: av.AudioStream) -> dict[str, str]:
    raw = {k.lower(): v for k, v in {**stream.metadata, **container.metadata}.items() if v}
    tags: dict[str, str] = {}
    for name, aliases in _TAG_ALIASES.items():
        for alias in aliases:
            value = raw.get(alias, "").strip()
            if value:
                tags[name] = value
                break
    return tags


#: Samples are resampled, digested and stored about this many seconds at a time: per-frame
#: calls cost more in Python overhead than the work itself. soxr's streaming output does not
#: depend on how its input is split, so batching leaves samples and digest bit-identical.
_BATCH_S = 1.0


def decode_audio(source: Source, sample_rate_hz: int) -> DecodedAudio:
    """Decode the first audio stream of `source`, downmixed to mono and resampled.

    Raises EmptyFile, NotAudio (no container or no audio stream) or UndecodableAudio (a
    container whose audio yields no samples). Isolated corrupt packets, common in broadcast
    captures, are skipped rather than failing the whole file.
    """
    container = _open(source)
    try:
        if not container.streams.audio:
            raise NotAudio("the file holds no audio stream")
        stream = container.streams.audio[0]
        stream.thread_type = "AUTO"
        in_rate = stream.rate or stream.codec_context.sample_rate
        if not in_rate:
            raise UndecodableAudio("the audio stream has no sample rate")
        duration_s = float(container.duration / av.time_base) if container.duration else 0.0
        buffer = _GrowingBuffer(int(duration_s * sample_rate_hz * 1.02) + sample_rate_hz)
        digest = hashlib.sha256()
        batch = MonoBatch(in_rate)
        resampler = soxr.ResampleStream(in_rate, sample_rate_hz, 1, dtype="float32", quality="HQ")
        batch_samples = max(1, int(in_rate * _BATCH_S))
        start_pts_s: float | None = None
        errors = 0
        decoded_any = False

        def push(last: bool = False) -> None:
            out = resampler.resample_chunk(batch.take(), last=last)
            if len(out):
                np.clip(out, -1.0, 1.0, out=out)
                digest.update((out * 32767.0).astype("<i2").tobytes())
                buffer.append(out)

        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                errors += 1
                if errors > 50 and not decoded_any:
                    break
                continue
            for frame in frames:
                if start_pts_s is None and frame.pts is not None and frame.time_base:
                    start_pts_s = float(frame.pts * frame.time_base)
                decoded_any |= batch.add(frame)
                if batch.pending >= batch_samples:
                    push()
        batch.finish()
        push(last=True)
        if not decoded_any:
            raise UndecodableAudio("the audio stream could not be decoded")
        return DecodedAudio(
            samples=buffer.result(),
            sample_rate_hz=sample_rate_hz,
            content_sha256=digest.hexdigest(),
            start_pts_s=start_pts_s,
            tags=_read_tags(container, stream),
        )
    except av.error.FFmpegError as exc:
        raise UndecodableAudio(f"decoding failed: {exc}") from exc
    finally:
        container.close()

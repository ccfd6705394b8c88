"""A plain per-frame decoder: the reference the batched decoder must reproduce.

It is the reference the batched decoder must reproduce bit for bit (samples and content
digest: the digest identifies songs already stored, the samples define every stored
fingerprint), and the "before" column of the side-by-side decode benchmark. Not used by the
service.
"""

from __future__ import annotations

import hashlib

import av
import numpy as np
import soxr

from service.audio.decode import DecodedAudio, Source, _open, _read_tags
from service.errors import NotAudio, UndecodableAudio


class _GrowingBuffer:
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
        return view.copy() if self._size < len(self._data) // 2 else view


def decode_audio_per_frame(source: Source, sample_rate_hz: int) -> DecodedAudio:
    """Per decoded frame: PyAV resampler to mono float, soxr, clip, digest, append."""
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
        to_mono = av.AudioResampler(format="flt", layout="mono", rate=in_rate)
        resampler = soxr.ResampleStream(in_rate, sample_rate_hz, 1, dtype="float32", quality="HQ")
        start_pts_s: float | None = None
        errors = 0
        decoded_any = False

        def push(chunk: np.ndarray, last: bool = False) -> None:
            out = resampler.resample_chunk(chunk, last=last)
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
                for mono in to_mono.resample(frame):
                    decoded_any = True
                    push(mono.to_ndarray().reshape(-1).astype(np.float32, copy=False))
        for mono in to_mono.resample(None):
            push(mono.to_ndarray().reshape(-1).astype(np.float32, copy=False))
        push(np.zeros(0, dtype=np.float32), last=True)
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

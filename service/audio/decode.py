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
from service.errors import AudioTooLong, EmptyFile, NotAudio, ServiceError, UndecodableAudio

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
    #: (start s, end s) of each stretch that could not be decoded and is silence of its
    #: length instead, in the samples' own time (0 = the first sample).
    damaged_spans: list[tuple[float, float]] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate_hz

    @property
    def damaged_s(self) -> float:
        return sum(end - start for start, end in self.damaged_spans)


class _ChunkList:
    """Decoded chunks in arrival order, joined once at the end.

    Nothing is sized from what the container declares (an MP3's Xing frame count or a FLAC
    STREAMINFO total can claim days of audio in a few bytes); memory follows what really
    decodes, which the caller's duration limit bounds.
    """

    def __init__(self) -> None:
        self._chunks: list[np.ndarray] = []
        self.samples = 0

    def append(self, chunk: np.ndarray) -> None:
        self._chunks.append(chunk)
        self.samples += len(chunk)

    def result(self) -> np.ndarray:
        if len(self._chunks) == 1:
            return self._chunks[0]
        if not self._chunks:
            return np.zeros(0, dtype=np.float32)
        joined = np.concatenate(self._chunks)
        self._chunks = [joined]
        return joined


#: Sample rates a real recording can have. A header may claim anything (1 Hz turns 40 KB of
#: WAV into 11 hours of audio, 2 GHz makes building the resampler's filter cost seconds), so
#: streams outside this range are refused before any decoding or resampling.
MIN_SAMPLE_RATE_HZ = 2000
MAX_SAMPLE_RATE_HZ = 768_000


def _check_rate(rate_hz: int) -> None:
    if not MIN_SAMPLE_RATE_HZ <= rate_hz <= MAX_SAMPLE_RATE_HZ:
        raise UndecodableAudio(
            f"the audio stream declares a sample rate of {rate_hz} Hz; "
            f"{MIN_SAMPLE_RATE_HZ}-{MAX_SAMPLE_RATE_HZ} Hz is supported"
        )


def _reason(exc: BaseException) -> str:
    """What went wrong, without FFmpeg's error numbers or the (temporary) file's path."""
    strerror = getattr(exc, "strerror", None)
    if isinstance(exc, av.error.FFmpegError) and isinstance(strerror, str) and strerror:
        return strerror[:1].lower() + strerror[1:]
    return "unsupported or corrupt audio data"


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
    except Exception:  # the full probe below decides, and reports
        pass
    try:
        return attempt({})
    except Exception as exc:  # whatever the demuxer trips on, the bytes are not media we read
        raise NotAudio(f"not a recognised audio or video container ({_reason(exc)})") from exc


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


#: After packets that failed to decode, the next frame's timestamp says how much audio they
#: held: that gap is filled with silence, so damaged audio keeps its clock and what follows
#: stays where it was played. Only gaps of more than half that frame count (less is rounding)
#: and of at most _MAX_GAP_S (more is a discontinuity, a splice or a timestamp wrap: the clock
#: starts again there). Where every packet decodes, only gaps over _SILENT_GAP_S count: some
#: containers' jitter (Ogg pages: tens of ms either way) is not lost audio.
_MIN_GAP_FRAMES = 0.5
_MAX_GAP_S = 30.0
#: A demuxer can drop damaged data without handing over a packet that fails (MPEG-TS whose
#: PES headers were hit): a timestamp gap this long (s) is lost audio even where every packet
#: decoded, far beyond any container's jitter.
_SILENT_GAP_S = 0.5

#: Raw MP3 and ADTS streams carry no timestamps: the demuxer counts frames, and skips bytes
#: it cannot parse without a trace in them. Their clock is the byte position at the stream's
#: bit rate, so bytes skipped between two packets that decode are that much lost audio.
_BYTE_CLOCK_FORMATS = frozenset({"mp3", "aac"})

#: A file more than this share of which could not be decoded (damaged_spans) is refused as
#: UndecodableAudio: what is left is too little to say anything about the file as a whole.
MAX_DAMAGED_SHARE = 0.5

#: Samples are resampled, digested and stored about this many seconds at a time: per-frame
#: calls cost more in Python overhead than the work itself. soxr's streaming output does not
#: depend on how its input is split, so batching leaves samples and digest bit-identical.
_BATCH_S = 1.0


def decode_audio(
    source: Source, sample_rate_hz: int, max_duration_s: float | None = None
) -> DecodedAudio:
    """Decode the first audio stream of `source`, downmixed to mono and resampled.

    Raises EmptyFile, NotAudio (no container or no audio stream), UndecodableAudio (a
    container whose audio yields no samples, or declares an absurd sample rate) or
    AudioTooLong (more than `max_duration_s` of audio, counted while decoding: what the
    container declares is never trusted). Corrupt packets, common in broadcast captures, are
    skipped rather than failing the whole file, and the gap they leave is filled with silence
    (see _MIN_GAP_FRAMES) and listed in `damaged_spans`; a file more than MAX_DAMAGED_SHARE of
    which is such gaps is UndecodableAudio. A demuxer that gives up midway ends the audio
    there.
    """
    container = _open(source)
    try:
        return _decode(container, sample_rate_hz, max_duration_s)
    except ServiceError:
        raise
    except MemoryError as exc:
        raise UndecodableAudio("the audio stream could not be decoded (out of memory)") from exc
    except Exception as exc:  # a demuxer or decoder tripping over hostile data
        raise UndecodableAudio(f"the audio stream could not be decoded ({_reason(exc)})") from exc
    finally:
        container.close()


def _decode(
    container: av.container.InputContainer, sample_rate_hz: int, max_duration_s: float | None
) -> DecodedAudio:
    """The container's first audio stream, decoded, downmixed and resampled.

    One loop over the packets, kept whole: the digest, the resampler's state, the duration
    limit and the gap handling all follow the same packet at once, and splitting it would pass
    them all between pieces (the identity tests pin its output bit for bit)."""
    if not container.streams.audio:
        raise NotAudio("the file holds no audio stream")
    stream = container.streams.audio[0]
    stream.thread_type = "AUTO"
    in_rate = stream.rate or stream.codec_context.sample_rate
    if not in_rate:
        raise UndecodableAudio("the audio stream has no sample rate")
    _check_rate(in_rate)
    buffer = _ChunkList()
    digest = hashlib.sha256()
    batch = MonoBatch(in_rate)
    resampler = soxr.ResampleStream(in_rate, sample_rate_hz, 1, dtype="float32", quality="HQ")
    batch_samples = max(1, int(in_rate * _BATCH_S))
    start_pts_s: float | None = None
    errors = 0
    decoded_any = False
    decoded_s = 0.0  # audio emitted so far, silence included
    limit_s = float("inf") if max_duration_s is None else max_duration_s
    #: Presentation time (s) of the first emitted sample; with `decoded_s`, where the next
    #: frame belongs.
    clock_origin_s: float | None = None
    lost_packets = False  # since the last frame
    #: Presentation times (s) of the first failed packet since the last frame, and of the end
    #: of the last one, where the container says.
    lost_from_s: float | None = None
    lost_to_s: float | None = None
    damaged: list[tuple[float, float]] = []

    def count(seconds: float) -> None:
        # Counted before the audio is kept: memory never holds more than the limit.
        nonlocal decoded_s
        decoded_s += seconds
        if decoded_s > limit_s:
            raise AudioTooLong(
                f"the file holds more than {limit_s:g} s of audio, the limit for this request"
            )

    def fill(gap_s: float) -> None:
        """Silence for `gap_s` of audio that did not decode, noted as damaged."""
        silence = round(gap_s * in_rate)
        if silence <= 0:
            return
        at = decoded_s
        count(silence / in_rate)
        batch.add_silence(silence)
        damaged.append((round(at, 3), round(decoded_s, 3)))

    def push(last: bool = False) -> None:
        out = resampler.resample_chunk(batch.take(), last=last)
        if len(out):
            np.clip(out, -1.0, 1.0, out=out)
            digest.update((out * 32767.0).astype("<i2").tobytes())
            buffer.append(out)

    byte_clock = bool(_BYTE_CLOCK_FORMATS & set(container.format.name.split(",")))
    declared_byte_rate = (stream.bit_rate or stream.codec_context.bit_rate or 0) / 8
    good_end: int | None = None  # byte after the last packet that decoded (byte clock)
    good_bytes, good_s = 0, 0.0  # what the packets that decoded held, in bytes and seconds

    def byte_rate() -> float:
        """Bytes a second of this stream takes: as its header declares (for VBR MP3, the Xing
        average), else as measured on what decoded so far."""
        if declared_byte_rate > 0:
            return declared_byte_rate
        return good_bytes / good_s if good_s >= 1.0 else 0.0

    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            break
        except Exception:
            if not decoded_any:
                raise
            break  # the rest of the file is beyond the demuxer: keep what decoded
        try:
            frames = packet.decode()
        except av.error.FFmpegError:
            if packet.pts is not None and packet.time_base:
                at_s = float(packet.pts * packet.time_base)
                if not lost_packets:
                    lost_from_s = at_s
                lost_to_s = at_s + float((packet.duration or 0) * packet.time_base)
            lost_packets = True
            errors += 1
            if errors > 50 and not decoded_any:
                break
            continue
        if byte_clock and frames and packet.pos is not None and packet.pos >= 0:
            if good_end is not None and packet.pos > good_end and byte_rate() > 0:
                fill((packet.pos - good_end) / byte_rate())
                lost_packets, lost_from_s = False, None  # counted: not again by timestamps
            good_end = packet.pos + packet.size
            good_bytes += packet.size
            good_s += sum(f.samples / f.sample_rate for f in frames)
        for frame in frames:
            frame_rate = frame.sample_rate
            if frame_rate != in_rate:
                _check_rate(frame_rate)
            frame_s = frame.samples / frame_rate
            if frame.pts is not None and frame.time_base:
                at_s = float(frame.pts * frame.time_base)
                if clock_origin_s is None:
                    # Packets lost before the first frame: the clock starts at the first.
                    first_s = at_s
                    if lost_from_s is not None and 0 < at_s - lost_from_s <= _MAX_GAP_S:
                        first_s = lost_from_s
                    start_pts_s = first_s
                    clock_origin_s = first_s - decoded_s
                gap_s = at_s - (clock_origin_s + decoded_s)
                floor_s = _MIN_GAP_FRAMES * frame_s if lost_packets else _SILENT_GAP_S
                if floor_s < gap_s <= _MAX_GAP_S:
                    fill(gap_s)
                elif abs(gap_s) > _MAX_GAP_S:
                    clock_origin_s = at_s - decoded_s
            lost_packets, lost_from_s = False, None
            count(frame_s)
            decoded_any |= batch.add(frame)
            if batch.pending >= batch_samples:
                push()
    if lost_packets and decoded_any and clock_origin_s is not None and lost_to_s is not None:
        # Packets lost at the end: the container says how long they were.
        gap_s = lost_to_s - (clock_origin_s + decoded_s)
        if 0 < gap_s <= _MAX_GAP_S:
            fill(gap_s)
    batch.finish()
    push(last=True)
    if not decoded_any:
        raise UndecodableAudio("the audio stream could not be decoded")
    audio = DecodedAudio(
        samples=buffer.result(),
        sample_rate_hz=sample_rate_hz,
        content_sha256=digest.hexdigest(),
        start_pts_s=start_pts_s,
        tags=_read_tags(container, stream),
        damaged_spans=damaged,
    )
    if audio.damaged_s > MAX_DAMAGED_SHARE * audio.duration_s:
        raise UndecodableAudio(
            f"{audio.damaged_s:.1f} s of the {audio.duration_s:.1f} s of audio could not be "
            f"decoded (more than {MAX_DAMAGED_SHARE:.0%})"
        )
    return audio

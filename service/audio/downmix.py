"""Decoded audio frames -> mono float32 samples, exactly as swresample makes them, in batches.

Downmixing one MPEG frame (26 ms) at a time through swresample and `to_ndarray` costs more in
Python overhead than decoding the frame does. Frames in the common formats are therefore only
wrapped (zero-copy) as they arrive and converted a batch at a time with numpy, reproducing
swresample's arithmetic bit for bit: the samples define the stored fingerprints and the content
digest, so they must not change. Any other format or channel layout still goes through
swresample, frame by frame.
"""

from __future__ import annotations

import av
import numpy as np

#: swresample's stereo -> mono matrix (its default, unnormalised): each channel times
#: float32(sqrt(1/2)), the two products summed in float32.
_STEREO_GAIN = np.float32(np.sqrt(0.5))

#: Sample formats converted with numpy: name -> (dtype, scale to float or None, planar).
#: Integer samples scale by a power of two, which is exact, as in swresample.
_FORMATS: dict[str, tuple[type[np.generic], np.float32 | None, bool]] = {
    "flt": (np.float32, None, False),
    "fltp": (np.float32, None, True),
    "s16": (np.int16, np.float32(1.0 / (1 << 15)), False),
    "s16p": (np.int16, np.float32(1.0 / (1 << 15)), True),
}

#: (format name, channel count): what a run of collected frames holds.
_Kind = tuple[str, int]


def _to_mono(kind: _Kind, parts: list[tuple[np.ndarray, ...]]) -> np.ndarray:
    """One mono float32 array from the per-channel (planar) or interleaved arrays of frames."""
    name, channels = kind
    _, scale, planar = _FORMATS[name]
    if planar:
        chans = [np.concatenate([p[c] for p in parts]) for c in range(channels)]
    else:
        interleaved = np.concatenate([p[0] for p in parts])
        chans = [interleaved[c::channels] for c in range(channels)]
    if scale is not None:
        chans = [c.astype(np.float32) * scale for c in chans]
    if channels == 1:
        return chans[0]  # concatenate copied it: it no longer refers to the frames' memory
    return chans[0] * _STEREO_GAIN + chans[1] * _STEREO_GAIN


class MonoBatch:
    """Collects decoded frames of one stream; `take` returns their mono samples, in order."""

    def __init__(self, rate_hz: int) -> None:
        self._rate_hz = rate_hz
        self._mono: list[np.ndarray] = []
        self._kind: _Kind | None = None
        self._parts: list[tuple[np.ndarray, ...]] = []
        self._swr: av.AudioResampler | None = None
        #: (format, layout, rate) of the frames `_swr` was set up for.
        self._swr_input: tuple[str, str, int] | None = None
        #: Samples (per channel) collected and not yet taken.
        self.pending = 0

    def add(self, frame: av.AudioFrame) -> bool:
        """Collect `frame`; False if swresample has produced nothing yet (as it buffers)."""
        name = frame.format.name
        channels = frame.layout.nb_channels
        if (
            name in _FORMATS
            and frame.sample_rate == self._rate_hz
            and (channels == 1 or frame.layout.name == "stereo")
        ):
            kind = (name, channels)
            if kind != self._kind:
                self._settle()
                self._kind = kind
            n = frame.samples
            dtype, _, planar = _FORMATS[name]
            if planar:
                planes = frame.planes
                self._parts.append(
                    tuple(np.frombuffer(planes[c], dtype=dtype, count=n) for c in range(channels))
                )
            else:
                self._parts.append(
                    (np.frombuffer(frame.planes[0], dtype=dtype, count=n * channels),)
                )
            self.pending += n
            return True
        return self._resample(frame)

    def add_silence(self, samples: int) -> None:
        """Append `samples` zeros after everything added so far (a gap in the stream)."""
        if self._swr is not None:
            # swresample holds back a few samples; they come before the gap.
            self._drain()
            self._swr = None
        self._settle()
        self._kind = None
        self._mono.append(np.zeros(samples, dtype=np.float32))
        self.pending += samples

    def finish(self) -> None:
        """Drain swresample's buffer (nothing is buffered unless it was used)."""
        if self._swr is not None:
            self._resample(None)

    def take(self) -> np.ndarray:
        """Every sample collected so far, as one mono float32 array."""
        self._settle()
        if len(self._mono) == 1:
            out = self._mono[0]
        else:
            out = np.concatenate(self._mono) if self._mono else np.zeros(0, dtype=np.float32)
        self._mono.clear()
        self.pending = 0
        return out

    def _settle(self) -> None:
        # Frames of one kind are converted together; a change of kind (or a frame for
        # swresample) converts what came before, so the order of samples is kept.
        if self._parts:
            assert self._kind is not None
            self._mono.append(_to_mono(self._kind, self._parts))
            self._parts.clear()

    def _resample(self, frame: av.AudioFrame | None) -> bool:
        self._settle()
        self._kind = None
        produced = False
        if frame is not None:
            signature = (frame.format.name, frame.layout.name, frame.sample_rate)
            if self._swr is not None and signature != self._swr_input:
                # A damaged stream switching layout or rate mid-way (a corrupt MP3 header):
                # swresample is set up per input, so drain it and start another.
                produced = self._drain()
                self._swr = None
            if self._swr is None:
                self._swr = av.AudioResampler(format="flt", layout="mono", rate=self._rate_hz)
                self._swr_input = signature
        elif self._swr is None:
            return False
        assert self._swr is not None
        for mono in self._swr.resample(frame):
            produced |= self._keep(mono)
        return produced

    def _drain(self) -> bool:
        assert self._swr is not None
        produced = False
        for mono in self._swr.resample(None):
            produced |= self._keep(mono)
        return produced

    def _keep(self, mono: av.AudioFrame) -> bool:
        samples = mono.to_ndarray().reshape(-1).astype(np.float32, copy=False)
        self._mono.append(samples)
        self.pending += len(samples)
        return len(samples) > 0

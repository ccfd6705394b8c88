"""Samples -> band envelopes: each log-spaced band's loudness, frame by frame, against its own
recent level.

Landmarks keep a few dozen peaks per second and need both peaks of a pair to survive. Under
babble at 0 dB only about 5 % of a clip's indexed landmarks come back, too few to beat chance,
although the landmark votes usually do rank the right song and offset among the first few
candidates. The envelopes keep the rhythm of every band (notes starting and stopping, drums),
which noise blurs but does not replace, so they can confirm such a candidate
(service/match/envelopes.py). They are stored beside the song, not hashed: they are only read
for a handful of candidates of a clip the landmarks left undecided.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.ndimage import uniform_filter1d

from service.audio.params import FingerprintParams
from service.audio.peaks import Peaks, find_peaks
from service.audio.spectrogram import frame_count, spectrogram_db

#: Frames of spectrogram computed at once (bounds memory whatever the file's length).
_CHUNK_FRAMES = 4096


@dataclass(frozen=True)
class EnvelopeParams:
    """The envelope layout. `format` is stored with every envelope: a song whose envelope has
    another format is simply not confirmed by envelopes (its landmarks still match)."""

    format: int = 1
    #: Bands of equal width in log frequency over the landmarks' range (100-3,750 Hz): 24 is
    #: about a major third each. Measured on the development corpus's noisy clips: the
    #: envelopes' correlation at the true offset stood 4.4 standard
    #: deviations (median) above the song's other offsets for clips the landmarks could not
    #: decide, and no candidate of 185 unindexed clips reached 3.2.
    bands: int = 24
    #: Each band's level is taken against its mean over +-this many frames (+-0.5 s): what
    #: is kept is change (onsets, notes, beats), which equalisation, gain and the spectrum
    #: of steady noise do not alter.
    detrend_frames: int = 16
    #: Stored as int8 steps of this many dB (+-31.75 dB around the local level).
    step_db: float = 0.25


DEFAULT_ENVELOPE = EnvelopeParams()


@lru_cache(maxsize=8)
def _edges(params: FingerprintParams, env: EnvelopeParams) -> np.ndarray:
    edges = np.geomspace(params.min_bin, params.max_bin + 1, env.bands + 1).astype(np.int64)
    if np.any(np.diff(edges) < 1):
        raise ValueError("too many envelope bands for the frequency range")
    return edges


def band_levels_of(
    spec: np.ndarray, params: FingerprintParams, env: EnvelopeParams = DEFAULT_ENVELOPE
) -> np.ndarray:
    """Log energy (dB) of each band in each frame of `spec` (frames x bins, dB from
    spectrogram_db): float32 (frames, bands). Each frame's levels depend on that frame alone,
    so any split of the spectrogram into blocks gives the same values, bit for bit."""
    edges = _edges(params, env)
    power = np.power(10.0, spec[:, edges[0] : edges[-1]] / 10.0, dtype=np.float32)
    energy = np.add.reduceat(power, edges[:-1] - edges[0], axis=1)
    return 10.0 * np.log10(np.maximum(energy, 1e-20))


def band_levels(
    samples: np.ndarray, params: FingerprintParams, env: EnvelopeParams = DEFAULT_ENVELOPE
) -> np.ndarray:
    """Log energy (dB) of each band in each STFT frame: float32 (frames, bands), on the
    landmarks' frame grid, so a song frame here is a song frame in the index."""
    total = frame_count(len(samples), params)
    out = np.empty((total, env.bands), dtype=np.float32)
    for start in range(0, total, _CHUNK_FRAMES):
        spec = spectrogram_db(samples, params, start, _CHUNK_FRAMES)
        out[start : start + len(spec)] = band_levels_of(spec, params, env)
    return out


def quantised_envelopes(levels: np.ndarray, env: EnvelopeParams = DEFAULT_ENVELOPE) -> np.ndarray:
    """Band levels (frames, bands) against their local mean, quantised: int8 (frames, bands).

    Needs the whole song's levels at once (the mean reaches across any block boundary), but
    those are small: `env.bands` floats a frame."""
    if len(levels) == 0:
        return np.empty((0, env.bands), dtype=np.int8)
    change = levels - uniform_filter1d(levels, 2 * env.detrend_frames + 1, axis=0)
    return np.clip(np.round(change / env.step_db), -127, 127).astype(np.int8)


def band_envelopes(
    samples: np.ndarray, params: FingerprintParams, env: EnvelopeParams = DEFAULT_ENVELOPE
) -> np.ndarray:
    """Band levels against their local mean, quantised: int8 (frames, bands)."""
    return quantised_envelopes(band_levels(samples, params, env), env)


class EnvelopeCollector:
    """A SpectrogramSink (peaks.py) that keeps the band levels of the frames a peak finder
    hands it, so that the envelopes come from the peak finder's STFT instead of their own:
    that STFT was about a tenth of indexing's time."""

    def __init__(self, n_frames: int, params: FingerprintParams, env: EnvelopeParams) -> None:
        self._levels = np.empty((n_frames, env.bands), dtype=np.float32)
        self._params = params
        self._env = env

    def __call__(self, first: int, spec: np.ndarray) -> None:
        self._levels[first : first + len(spec)] = band_levels_of(spec, self._params, self._env)

    def envelopes(self) -> np.ndarray:
        """band_envelopes of the whole signal, once the peak finder has run."""
        return quantised_envelopes(self._levels, self._env)


def peaks_and_envelopes(
    samples: np.ndarray, params: FingerprintParams, env: EnvelopeParams = DEFAULT_ENVELOPE
) -> tuple[Peaks, np.ndarray]:
    """find_peaks and band_envelopes of `samples`, equal to theirs, from one STFT (the
    peak finder's chunks hand their own frames, not the halo, to an EnvelopeCollector)."""
    collector = EnvelopeCollector(frame_count(len(samples), params), params, env)
    return find_peaks(samples, params, collector), collector.envelopes()

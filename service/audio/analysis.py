"""Bytes on disk -> everything the catalogue needs to know about a piece of audio.

These functions run inside worker processes (service/executor.py), so they take a path, not an
open file, and return only small, picklable results: never the decoded samples.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from service.audio.decode import decode_audio
from service.audio.envelopes import DEFAULT_ENVELOPE, EnvelopeCollector, EnvelopeParams
from service.audio.hashes import Fingerprints, landmark_hashes
from service.audio.params import FingerprintParams
from service.audio.peaks import Peaks, find_peaks, find_peaks_and_sustained
from service.audio.spectrogram import frame_count
from service.audio.triplets import index_fingerprints
from service.errors import AudioTooShort

#: Shortest audio worth fingerprinting: below one STFT window plus a target zone, no landmark
#: pair can form.
MIN_DURATION_S = 1.0

#: Longest clip whose samples analyse_query keeps (60 s: 1.9 MB at 8 kHz), so that a clip the
#: second tier leaves undecided can be analysed again at other hop phases; longer files are
#: matched window by window (timeline.py) and keep none.
KEEP_SAMPLES_MAX_S = 60.0


@dataclass(frozen=True)
class AnalysedAudio:
    duration_s: float
    n_frames: int
    #: Seconds per frame under the parameters it was analysed with.
    frame_s: float
    content_sha256: str
    fingerprints: Fingerprints
    #: The landmark peaks the fingerprints were built from; queries re-hash them under
    #: candidate speeds (service.match.variants.speed_variants).
    peaks: Peaks
    #: Band envelopes, int8 (frames, bands): stored with a song, and what confirms a noisy
    #: clip's candidates (service/match/envelopes.py).
    envelope: np.ndarray | None = None
    envelope_format: int = 0
    #: A clip's second-tier peaks (peaks.find_sustained_peaks), when asked for.
    sustained_peaks: Peaks | None = None
    start_pts_s: float | None = None
    tags: dict[str, str] = field(default_factory=dict)
    #: The decoded samples of a short clip to identify (analyse_query with `keep_samples`),
    #: for the analyses at other hop phases that only an undecided clip needs.
    samples: np.ndarray | None = None
    #: (start s, end s) of the stretches that could not be decoded (silence in their place:
    #: decode.DecodedAudio.damaged_spans).
    damaged_spans: list[tuple[float, float]] = field(default_factory=list)


def analyse_file(
    path: str | os.PathLike[str],
    params: FingerprintParams,
    envelope: EnvelopeParams | None = DEFAULT_ENVELOPE,
    *,
    sustained: bool = False,
    keep_samples_max_s: float = 0.0,
    max_duration_s: float | None = None,
    query: bool = False,
) -> AnalysedAudio:
    """Decode and fingerprint a file, with its band envelopes unless `envelope` is None, with
    the peaks a clip's second tier looks up (`sustained`, for a clip to identify under
    `params.for_queries()`), and with its samples if it lasts at most `keep_samples_max_s`.
    Its fingerprints are what the index stores (index_fingerprints), or for a `query` its
    landmarks alone (the tiers hash its triplets themselves, from thinned peaks).
    Raises the audio ServiceErrors on bad input, AudioTooLong past `max_duration_s`."""
    audio = decode_audio(path, params.sample_rate_hz, max_duration_s)
    if audio.duration_s < MIN_DURATION_S:
        raise AudioTooShort(
            f"audio lasts {audio.duration_s:.2f} s; at least {MIN_DURATION_S:.0f} s is needed"
        )
    # Peaks, sustained peaks and envelopes all from one STFT.
    n_frames = frame_count(len(audio.samples), params)
    collector = None if envelope is None else EnvelopeCollector(n_frames, params, envelope)
    sustained_peaks = None
    if sustained:
        peaks, sustained_peaks = find_peaks_and_sustained(audio.samples, params, collector)
    else:
        peaks = find_peaks(audio.samples, params, collector)
    return AnalysedAudio(
        duration_s=audio.duration_s,
        n_frames=n_frames,
        frame_s=params.frame_s,
        content_sha256=audio.content_sha256,
        fingerprints=landmark_hashes(peaks, params) if query else index_fingerprints(peaks, params),
        peaks=peaks,
        envelope=None if collector is None else collector.envelopes(),
        envelope_format=0 if envelope is None else envelope.format,
        sustained_peaks=sustained_peaks,
        start_pts_s=audio.start_pts_s,
        tags=audio.tags,
        samples=audio.samples if audio.duration_s <= keep_samples_max_s else None,
        damaged_spans=audio.damaged_spans,
    )


def analyse_query(
    path: str | os.PathLike[str],
    params: FingerprintParams,
    *,
    keep_samples: bool = True,
    max_duration_s: float | None = None,
) -> AnalysedAudio:
    """A clip (or long file) to identify against an index built with `params`: its
    query-density peaks and hashes, band envelopes and second-tier sustained peaks, and, with
    `keep_samples`, a short clip's samples (KEEP_SAMPLES_MAX_S); AudioTooLong past
    `max_duration_s`."""
    keep = KEEP_SAMPLES_MAX_S if keep_samples else 0.0
    return analyse_file(
        path,
        params.for_queries(),
        sustained=True,
        keep_samples_max_s=keep,
        max_duration_s=max_duration_s,
        query=True,
    )


@dataclass(frozen=True)
class PhaseAnalysis:
    """A file's index fingerprints on a frame grid that starts `shift_samples` later (at
    `params.sample_rate_hz`): its frame f covers samples shift_samples + f * hop onwards."""

    shift_samples: int
    n_frames: int
    fingerprints: Fingerprints


def analyse_at_phases(
    path: str | os.PathLike[str],
    params: FingerprintParams,
    shifts_samples: list[int],
    max_duration_s: float | None = None,
) -> list[PhaseAnalysis]:
    """The index fingerprints of a file (as analyse_file makes them) once per start shift, each
    a fraction of a hop: the same audio sampled by the STFT at other instants. A copy of a song
    whose start moved by a fraction of a frame (silence trimmed, another encoder's delay) has
    other peaks and landmarks on its own grid; on the grid shifted back by that fraction it
    has the song's own (service/match/duplicates.py)."""
    samples = decode_audio(path, params.sample_rate_hz, max_duration_s).samples
    analyses = []
    for shift in shifts_samples:
        shifted = samples[shift:]
        fingerprints = index_fingerprints(find_peaks(shifted, params), params)
        analyses.append(PhaseAnalysis(shift, frame_count(len(shifted), params), fingerprints))
    return analyses

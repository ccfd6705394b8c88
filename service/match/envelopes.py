"""Candidates the landmarks left undecided -> confirmed matches, from band envelopes.

A clip under heavy noise (babble, a crowd, a car) keeps too few of its song's landmarks for
the votes to beat chance, yet those few votes usually still put the right song and offset
among the first candidates. The clip's band envelopes (service/audio/envelopes.py) are then
correlated with each candidate's at the voted offset. Whether that correlation means anything
is judged against the same song at every other offset nearby: the z-score of the voted offset
among them. A song that merely sounds alike (same instruments, same tempo) correlates about as
well everywhere, a song whose rhythm the clip repeats stands out at one offset only.

The z-score is read as a normal tail, multiplied by the candidates tried and calibrated on the
development corpus. There candidates of 185
unindexed clips (8 each) reached at most z 3.1, while half of the noisy clips the landmarks
could not decide reached 4.4 with their true song.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.signal import fftconvolve
from scipy.stats import norm


@dataclass(frozen=True)
class EnvelopeCheckParams:
    #: The chance level of a z-score (a normal tail, times the candidates tried) is multiplied
    #: by 10^calibration_log10, and the candidate is confirmed when the confidence that leaves
    #: reaches MatchParams.min_confidence. Correlations of music are heavier-tailed than a
    #: normal: measured on the full development benchmark (every answer kept from z 3 on, then
    #: thresholded; BENCHMARKS.md), a chance level of 10^-3.6 (z about 4 for eight candidates, 3.5
    #: for one) answered 461 noisy clips right, no indexed clip with a wrong song and one of
    #: 2,184 unindexed clips (music built from the same samples as a catalogue song); 10^-3
    #: answered 88 more clips right but 4 unindexed clips and 2 with a wrong song.
    #: That calibration checked eight candidates; with three, the same threshold is
    #: 1.6 + log10(8 / 3).
    calibration_log10: float = 2.03
    #: No z-score below this confirms anything, however few the candidates.
    min_z: float = 3.0
    #: Candidates checked per clip, most improbable landmark alignments first. The song
    #: confirmed was the first candidate in 100 of 104 noisy clips (babble and ambient noise
    #: at 0 and 5 dB, 5 and 10 s) and the second in the other 4, while the eighth of eight
    #: confirmed a catalogue song for one unindexed medley that plays its tune (in three
    #: codecs): development corpus, with the sustained second tier (peaks.find_sustained_peaks).
    candidates: int = 3
    #: Song frames either side of the voted offset the background is taken from (+-40 s).
    context_frames: int = 1250
    #: Offsets this close to the voted one (frames, +-1 s) are not background: an envelope
    #: correlates with itself shifted by a beat or less.
    exclude_frames: int = 31
    #: Fewest frames of the clip that must lie within the song, and fewest background
    #: offsets, for a z-score to be computed at all.
    min_overlap_frames: int = 80
    min_background: int = 60
    #: A landmark match too weak to be final (MatchParams.accept_without_speed_search_log10)
    #: is dropped when the envelopes at its offset stand less than this many standard
    #: deviations out: two independent tests of one alignment must not disagree. Measured on
    #: the full development benchmark: of 1,294 such answers with their true song, 2 stood
    #: below 1.5 (the 1st percentile was 2.5), while the three 10-s clips of one track
    #: answered with a song sharing a few seconds of a sample (at a 1.9 % time stretch) stood
    #: at 0.6-1.2 and an unindexed clip's chance alignment at -0.7.
    veto_z: float = 1.5
    #: A candidate whose landmarks beat chance on their own (MatchParams.min_confidence) but
    #: not by enough to be final, which the speed grid then replaced with nothing better, is
    #: answered when its envelopes stand at least this many standard deviations out at its
    #: offset: two tests of one alignment that agree. 1 % of the weak right landmark answers
    #: of the full development benchmark stand below 2.5 (veto_z above). On its babble clips
    #: at 0 dB (5 s) the rule answered 6 more clips right, at z 2.8-3.8, while the three
    #: unindexed clips (of 2,184) that keeping such matches with the veto alone answered
    #: stood at 1.8-2.3.
    corroborate_z: float = 2.5
    #: Added to calibration_log10 for a candidate with fewer aligned frames than a landmark
    #: match needs (MatchParams.min_score; MatchParams.candidate_min_score lets such
    #: candidates through). They bring the check more clips of nothing in the catalogue (on
    #: the development corpus 2,052 of its 2,184 unindexed clips instead of 1,645) and more
    #: chance candidates per clip: uncharged, 4 more unindexed clips were answered, at z
    #: 4.0-4.3; at 10^1.0 none was, while the babble clips gained stood at z 5.0-10.9.
    calibration_log10_weak: float = 1.0


@dataclass(frozen=True)
class EnvelopeScore:
    z: float
    #: log10 of the chance that some candidate reaches this z with an unrelated song.
    chance_log10: float


def fetch_range(at: int, query_frames: int, params: EnvelopeCheckParams) -> tuple[int, int]:
    """Song frames [first, last) a check at song frame `at` needs (clip them to the song)."""
    first = max(0, at - params.context_frames)
    return first, max(first, at + query_frames + params.context_frames)


def correlations(query: np.ndarray, song: np.ndarray) -> np.ndarray:
    """Pearson correlation of `query` (n x bands) with every n-frame window of `song`
    (m x bands, m >= n), both flattened after removing each band's mean: shape (m - n + 1,).

    Every window at once through one FFT correlation per band and running sums, not a loop
    over offsets."""
    q = query.astype(np.float64)
    q -= q.mean(axis=0)
    s = song.astype(np.float64)
    n = len(q)
    # The query is centred, so a window's own mean does not change the cross term.
    cross = fftconvolve(s, q[::-1], mode="valid", axes=0).sum(axis=1)
    c1 = np.concatenate([np.zeros((1, s.shape[1])), np.cumsum(s, axis=0)])
    c2 = np.concatenate([np.zeros((1, s.shape[1])), np.cumsum(s * s, axis=0)])
    w1 = c1[n:] - c1[:-n]
    w2 = c2[n:] - c2[:-n]
    window_var = np.maximum(w2 - w1 * w1 / n, 0.0).sum(axis=1)
    query_var = float((q * q).sum())
    denominator = np.sqrt(window_var * query_var)
    return np.where(denominator > 1e-9, cross / np.maximum(denominator, 1e-9), 0.0)


def at_speed(query: np.ndarray, speed: float) -> np.ndarray:
    """The clip's envelope frames on the song's time grid, for a clip playing `speed` times
    as fast as the song (song frame = offset + speed x clip frame): nearest frames, as a
    2 % tempo change drifts six frames over a 10-s clip and would blur every beat."""
    if speed == 1.0 or len(query) == 0:
        return query
    frames = np.arange(int(len(query) * speed))
    return query[np.minimum(np.round(frames / speed).astype(np.int64), len(query) - 1)]


def envelope_z(
    query: np.ndarray, song: np.ndarray, at: int, params: EnvelopeCheckParams
) -> float | None:
    """How far the correlation of `query` with `song` at song frame `at` stands above the
    correlations at the song's other offsets, in standard deviations (None: too little
    overlap or background). `song` holds the song's frames from 0 (or from the start of the
    range fetched, with `at` relative to it)."""
    # Only the part of the clip that lies within the song is compared.
    q_first = max(0, -at)
    q_last = min(len(query), len(song) - at)
    if q_last - q_first < params.min_overlap_frames:
        return None
    corr = correlations(query[q_first:q_last], song)
    position = at + q_first
    background = np.concatenate(
        [
            corr[: max(0, position - params.exclude_frames)],
            corr[position + params.exclude_frames + 1 :],
        ]
    )
    if len(background) < params.min_background:
        return None
    spread = float(background.std())
    if spread <= 1e-9:
        return None
    return (float(corr[position]) - float(background.mean())) / spread


def score_of(z: float, tried: int, params: EnvelopeCheckParams) -> EnvelopeScore:
    """The z-score as a chance level: a normal tail times the candidates tried, calibrated."""
    tail = float(norm.logsf(z)) / math.log(10.0)
    return EnvelopeScore(z, tail + math.log10(max(tried, 1)) + params.calibration_log10)

"""Peaks -> landmark hashes: anchor/target pairs packed into integers.

A hash packs (f1, f2 - f1, t2 - t1) of an anchor peak and one peak in its target zone. It is a
pure function of integer peak coordinates, so it is identical across processes, machines and
Python versions (unlike Python's salted `hash()`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.audio.params import FingerprintParams
from service.audio.peaks import Peaks

_DT_BITS = 6
_DF_BITS = 8
_F1_BITS = 9
#: Number of distinct hash values.
HASH_SPACE = 1 << (_F1_BITS + _DF_BITS + _DT_BITS)


@dataclass(frozen=True)
class Fingerprints:
    """Hashes with the STFT frame of their anchor peak; both int32 of shape (n,)."""

    hashes: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.hashes)


def pair_peaks(peaks: Peaks, params: FingerprintParams) -> tuple[np.ndarray, np.ndarray]:
    """Indices (anchor, target) of every landmark pair, at most `fan_out` per anchor.

    Targets lie min_dt..max_dt frames after the anchor and within +-max_df bins; the nearest
    in time (then lowest in frequency) are taken first. Peaks are sorted by frame, so the k-th
    following peak is the k-th candidate: one vectorised pass per look-ahead distance k, and k
    stops once no anchor has a candidate that close.
    """
    frames, bins = peaks.frames, peaks.bins
    n = len(frames)
    anchors: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    for k in range(1, n):
        i = np.arange(n - k)
        j = i + k
        dt = frames[j] - frames[i]
        if dt.min() > params.max_dt_frames:
            break
        ok = (
            (dt >= params.min_dt_frames)
            & (dt <= params.max_dt_frames)
            & (np.abs(bins[j] - bins[i]) <= params.max_df_bins)
        )
        anchors.append(i[ok])
        targets.append(j[ok])
    if not anchors:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty.copy()
    a = np.concatenate(anchors)
    t = np.concatenate(targets)
    # Candidates were appended by increasing k, so a stable sort by anchor keeps the nearest
    # targets first within each anchor's group.
    order = np.argsort(a, kind="stable")
    a, t = a[order], t[order]
    rank = np.arange(len(a)) - np.searchsorted(a, a, side="left")
    keep = rank < params.fan_out
    return a[keep], t[keep]


def pack_hashes(
    f1: np.ndarray, f2: np.ndarray, dt: np.ndarray, params: FingerprintParams
) -> np.ndarray:
    """Pack (f1, f2 - f1, dt) into int32: f1 in 9 bits, df + 128 in 8 bits, dt in 6 bits."""
    if params.max_bin >= 1 << _F1_BITS or params.max_df_bins >= 1 << (_DF_BITS - 1):
        raise ValueError("parameters exceed the hash layout")
    if params.max_dt_frames >= 1 << _DT_BITS:
        raise ValueError("parameters exceed the hash layout")
    df = f2.astype(np.int32) - f1.astype(np.int32) + (1 << (_DF_BITS - 1))
    return (
        (f1.astype(np.int32) << (_DF_BITS + _DT_BITS)) | (df << _DT_BITS) | dt.astype(np.int32)
    ).astype(np.int32)


def unpack_hashes(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of pack_hashes: (f1, f2, dt)."""
    h = hashes.astype(np.int32)
    dt = h & ((1 << _DT_BITS) - 1)
    df = ((h >> _DT_BITS) & ((1 << _DF_BITS) - 1)) - (1 << (_DF_BITS - 1))
    f1 = h >> (_DF_BITS + _DT_BITS)
    return f1, f1 + df, dt


def landmark_hashes(peaks: Peaks, params: FingerprintParams) -> Fingerprints:
    """Hashes of every anchor/target pair, with the anchor's frame as offset."""
    a, t = pair_peaks(peaks, params)
    hashes = pack_hashes(peaks.bins[a], peaks.bins[t], peaks.frames[t] - peaks.frames[a], params)
    return Fingerprints(hashes=hashes, offsets=peaks.frames[a].astype(np.int32))

"""A query's landmarks as hypotheses: one variant per assumed speed (or pitch shift).

Speed changes (a radio edit playing 2-5 % fast raises pitch and tempo together) move every
landmark: frequencies scale by the speed and times by its inverse, so plain (f1, df, dt) hashes
stop matching. The query's peaks are therefore mapped back to song coordinates under a grid of
candidate speeds (`speed_variants`) before hashing; each variant is looked up like a query of its
own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.audio.hashes import Fingerprints, pack_hashes, pair_peaks
from service.audio.params import FingerprintParams
from service.audio.peaks import Peaks


@dataclass(frozen=True)
class QueryVariant:
    """The query's landmarks mapped to song coordinates under one assumed speed."""

    #: Assumed speed: query frequencies are song frequencies x factor, query times / factor.
    factor: float
    hashes: np.ndarray  # int32
    #: Anchor frame in song units (query frame x factor, rounded).
    offsets: np.ndarray
    #: Anchor frame in the query as recorded, for reporting the matched span.
    query_frames: np.ndarray
    #: Hashes with more stored postings than this are left out of this variant's votes, as if
    #: the lookup had left them out: the hits given to the matcher may hold them anyway, for
    #: another variant looked up under a looser cap, and the matches must not depend on which
    #: other variants or windows happened to be looked up together.
    max_postings: int | None = None
    #: Frequencies only: a pitch shift scales the clip's frequencies by `factor` and leaves
    #: its times alone (offsets and time differences are the clip's own).
    pitch_only: bool = False
    #: Seconds into the clip at which the analysis the hashes come from starts (a later hop
    #: phase: FingerprintParams.query_hop_phases); its frames count from there.
    start_s: float = 0.0

    @property
    def time_scale(self) -> float:
        """How much faster than the song the clip plays under this variant."""
        return 1.0 if self.pitch_only else self.factor


def speed_variants(
    peaks: Peaks,
    factors: Sequence[float],
    params: FingerprintParams,
    max_postings: int | None = None,
    *,
    pitch_only: bool = False,
) -> list[QueryVariant]:
    """Hashes of the query re-computed as if played at each speed in `factors` (with
    `pitch_only`, as if only its frequencies were scaled); every speed but 1.0 leaves out
    hashes with more than `max_postings` postings."""
    variants = []
    for factor in factors:
        if factor == 1.0:
            bins, frames = peaks.bins, peaks.frames
        else:
            bins = np.round(peaks.bins / factor).astype(np.int32)
            frames = (
                peaks.frames if pitch_only else np.round(peaks.frames * factor).astype(np.int32)
            )
        inside = (bins >= params.min_bin) & (bins <= params.max_bin)
        order = np.lexsort((bins[inside], frames[inside]))
        moved = Peaks(
            frames[inside][order], bins[inside][order], peaks.prominence_db[inside][order]
        )
        recorded = peaks.frames[inside][order]
        a, t = pair_peaks(moved, params)
        variants.append(
            QueryVariant(
                factor=factor,
                hashes=pack_hashes(
                    moved.bins[a], moved.bins[t], moved.frames[t] - moved.frames[a], params
                ),
                offsets=moved.frames[a].astype(np.int32),
                query_frames=recorded[a].astype(np.int32),
                max_postings=None if factor == 1.0 else max_postings,
                pitch_only=pitch_only and factor != 1.0,
            )
        )
    return variants


def variant_of(fingerprints: Fingerprints, start_s: float = 0.0) -> QueryVariant:
    """A query fingerprinted at its own speed, as a single variant (of the analysis started
    `start_s` into the clip)."""
    return QueryVariant(
        1.0, fingerprints.hashes, fingerprints.offsets, fingerprints.offsets, start_s=start_s
    )


def scale_variants(
    fingerprints: Fingerprints, scales: Sequence[float], start_s: float = 0.0
) -> list[QueryVariant]:
    """A query's triplet hashes (service/audio/triplets.py) as one variant per time scale.

    Triplet hashes do not change with speed, so every variant has the same hashes and one
    lookup serves them all; what differs is where each puts the query's anchors on the song's
    time axis (query frame x scale), so that a clip played at that scale piles its votes into
    one offset bin of its variant."""
    frames = fingerprints.offsets.astype(np.float64)
    return [
        QueryVariant(
            factor=float(scale),
            hashes=fingerprints.hashes,
            offsets=np.round(frames * scale).astype(np.int32),
            query_frames=fingerprints.offsets,
            start_s=start_s,
        )
        for scale in scales
    ]

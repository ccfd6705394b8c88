"""How unlikely an alignment is by chance, and the alignment refined for a residual time scale.

The score is the number of distinct query frames (instants) whose landmarks line up at a song's
best offset (+-1 frame), and the confidence says how unlikely that count is by chance *for that
song and that query*: the expected chance count per bin is the song's hits (with its share of
the postings a lookup's budget left out: search._chance_log10) divided by the number of offsets
it could align at, which grows with the query's length and the song's, so one threshold serves
3-s and 60-s queries alike. A residual time scale (tempo changed without pitch,
or pitch without tempo) makes the offsets drift along the query instead of piling into one bin;
`refine_time_scale` searches that drift for the best candidates.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import poisson

from service.match.votes import best_offsets


def chance_log10_p(
    score: np.ndarray,
    total_hits: np.ndarray,
    song_frames: np.ndarray,
    query_frames: int,
    dispersion: float,
) -> np.ndarray:
    """log10 of the chance that *some* offset of a song reaches `score` by coincidence.

    Under the null a song's `total_hits` votes fall uniformly over the song_frames +
    query_frames offsets it could align at; a 3-bin window expects 3 * total / bins of them.
    The per-bin Poisson tail is multiplied by the number of bins (a Bonferroni bound).
    """
    bins = np.maximum(song_frames + query_frames, 1).astype(np.float64)
    lam = np.maximum(3.0 * dispersion * total_hits / bins, 1e-9)
    log_sf = poisson.logsf(score - 1, lam) / np.log(10.0)
    return np.minimum(0.0, log_sf + np.log10(bins))


def covered_span(frames: np.ndarray, max_gap: float) -> tuple[int, int]:
    """(first, last) frame of the largest run of `frames` with no gap over `max_gap`."""
    ordered = np.sort(frames)
    breaks = np.nonzero(np.diff(ordered) > max_gap)[0]
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [len(ordered) - 1]])
    best = int(np.argmax(ends - starts))  # ties: the earliest run
    return int(ordered[starts[best]]), int(ordered[ends[best]])


#: refine_time_scale first tries every this-many-th scale of its grid.
_COARSE_SCALE_STEP = 4


def _best_scale(
    db_frame: np.ndarray, q_frame: np.ndarray, scales: np.ndarray, tried: np.ndarray
) -> tuple[int, int, int]:
    """(index into scales, offset, score) of the best of the scales at indices `tried`."""
    d = np.round(db_frame[None, :] - scales[tried][:, None] * q_frame[None, :]).astype(np.int64)
    groups = np.broadcast_to(np.arange(len(tried))[:, None], d.shape)
    ids, best_delta, score, _ = best_offsets(groups.ravel(), d.ravel())
    # Neighbouring scales often tie (the +-1 bin window absorbs a little drift): the middle
    # of the plateau is the best estimate of the true scale.
    tied = np.nonzero(score == score.max())[0]
    top = int(tied[len(tied) // 2])
    return int(tried[ids[top]]), int(best_delta[top]), int(score[top])


def refine_time_scale(
    db_frame: np.ndarray, q_frame: np.ndarray, scales: np.ndarray
) -> tuple[int, int, int]:
    """Best (scale index, offset, score) when song time = offset + scale x query time.

    A residual time scale makes offsets drift along the query; re-voting under each candidate
    scale lines them up again. `scales` is a symmetric grid whose step moves the last query
    frame by about one frame. Re-voting costs (scales x votes), and a true match brings
    thousands of votes, so the grid is searched coarse to fine: every fourth scale first (the
    nearest is then at most two frames of drift off, which the +-1 bin window still gathers),
    then every scale within four steps of the best of those.
    """
    step = _COARSE_SCALE_STEP
    middle = len(scales) // 2
    coarse = middle + step * np.arange(-(middle // step), middle // step + 1)
    best, _, _ = _best_scale(db_frame, q_frame, scales, coarse)
    fine = np.arange(max(0, best - step), min(len(scales), best + step + 1))
    return _best_scale(db_frame, q_frame, scales, fine)

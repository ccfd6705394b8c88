"""Peaks -> triplet hashes that do not move with speed, tempo or pitch (index format "fp2").

A triplet is an anchor peak a and two later peaks b and c (t_a < t_b < t_c). Its hash packs
only quantities that a change of playback speed, tempo or pitch leaves alone:

- the ratio of its time gaps (t_b - t_a) / (t_c - t_a): a time scale multiplies both gaps;
- the intervals p_b - p_a and p_c - p_a on a log-frequency (semitone) axis: a pitch shift
  or a speed change multiplies every frequency, which is a shift on that axis;
- the anchor's coarse pitch band (`band_semitones` wide): a change of up to +-10 % moves a
  pitch by at most 1.65 semitones, into the neighbouring band at worst, which the query
  probes;
- the span t_c - t_a in a few cells of a log axis (`span_cells`): a time scale of up to
  +-11 % moves it by a fraction of a cell, into the neighbouring cell at worst, which the
  query probes too.

So one lookup serves every speed: the time scale of a match follows from the positions of the
matched anchors (service/match/variants.py, scale_variants), not from re-hashing the query
under a grid of speeds. The index keeps a few triplets per anchor; a query forms more (more
targets per anchor, a target zone widened by the scale tolerance) and, where a quantised value
lies near the edge of its cell, also hashes the neighbouring cell, so that the triplets the
index stored are among the query's whatever its speed.

Peaks come from service/audio/peaks.py (integer frames and FFT bins, sorted by frame then bin).
"""

from __future__ import annotations

from functools import cache

import numpy as np

from service.audio.hashes import Fingerprints, landmark_hashes
from service.audio.params import FingerprintParams, TripletParams
from service.audio.peaks import Peaks

_RATIO_BITS = 5
_SPAN_BITS = 2
_INTERVAL_BITS = 7
_BAND_BITS = 4
#: Bits of the hash's fields, most significant first: band, interval of c, interval of b,
#: span cell, ratio cell (_pack).
TRIPLET_FIELD_BITS = (_BAND_BITS, _INTERVAL_BITS, _INTERVAL_BITS, _SPAN_BITS, _RATIO_BITS)
#: Number of distinct triplet hash values.
TRIPLET_HASH_SPACE = 1 << sum(TRIPLET_FIELD_BITS)
#: Set in every triplet hash: triplets and landmarks (below 2^23) share the index's hash
#: column without ever sharing a value.
TRIPLET_TAG = 1 << 30


@cache
def check_layout(tp: TripletParams) -> None:
    """Raise ValueError when the quantised values would not fit the hash layout (checked once
    per parameter set: every fingerprinting call asks)."""
    half = round(tp.max_interval_semitones / tp.interval_step_semitones)
    if (
        2 * half + 1 > 1 << _INTERVAL_BITS
        or tp.ratio_cells > 1 << _RATIO_BITS
        or not 1 <= tp.span_cells <= 1 << _SPAN_BITS
    ):
        raise ValueError("triplet parameters exceed the hash layout")
    # A query probes two cells of a field at most: its span window must not cover three.
    widen = 1.0 + tp.query_scale_tolerance
    spans = np.arange(
        max(1, int(np.floor(tp.min_span_frames / widen))),
        int(np.ceil(tp.max_span_frames * widen)) + 1,
        dtype=np.float64,
    )
    low, high = _span_cells(spans, tp, query=True)
    if (high - low > 1).any():
        raise ValueError("a query's span window covers more than two span cells")


def index_fingerprints(peaks: Peaks, params: FingerprintParams) -> Fingerprints:
    """What the index stores for a song's peaks: its landmark pairs, and under the "fp2"
    format (params.triplets) its triplets too, sorted by offset."""
    landmarks = landmark_hashes(peaks, params)
    if params.triplets is None:
        return landmarks
    triplets = triplet_hashes(peaks, params.triplets, params.min_bin)
    offsets = np.concatenate([landmarks.offsets, triplets.offsets])
    order = np.argsort(offsets, kind="stable")
    hashes = np.concatenate([landmarks.hashes, triplets.hashes])
    return Fingerprints(hashes[order], offsets[order])


def semitones(bins: np.ndarray) -> np.ndarray:
    """Log-frequency of FFT bins (semitones above bin 1; float64, same shape)."""
    return 12.0 * np.log2(np.maximum(bins, 1).astype(np.float64))


def _nth_following(
    frames: np.ndarray, start: np.ndarray, count: int, stop_frame: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For each row r, the indices start[r], start[r] + 1, ... (at most `count`) of peaks
    whose frame is at most stop_frame[r]: (row, peak index), row-major, nearest first."""
    n = len(frames)
    k = np.arange(count)
    idx = start[:, None] + k[None, :]
    ok = idx < n
    idx = np.where(ok, idx, n - 1)
    ok &= frames[idx] <= stop_frame[:, None]
    rows = np.broadcast_to(np.arange(len(start))[:, None], idx.shape)
    return rows[ok], idx[ok]


def form_triplets(
    peaks: Peaks,
    tp: TripletParams,
    *,
    query: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices (a, b, c) into `peaks` of every triplet, as three int64 arrays of shape (n,).

    b is one of the `first_fan_out` nearest peaks min_gap..max_first_gap frames after a; c one
    of the `second_fan_out` nearest at least min_span frames after a and min_gap after b, at
    most max_span after a. A query (`query`) takes the query fan-outs and a zone widened by
    query_scale_tolerance at both ends, so that a clip played up to that much faster or
    slower still forms the index's triplets.
    """
    frames = peaks.frames.astype(np.int64)
    n = len(frames)
    empty = np.empty(0, dtype=np.int64)
    if n < 3:
        return empty, empty.copy(), empty.copy()
    if query:
        widen = 1.0 + tp.query_scale_tolerance
        min_gap = max(1, int(np.floor(tp.min_gap_frames / widen)))
        max_first = int(np.ceil(tp.max_first_gap_frames * widen))
        min_span = int(np.floor(tp.min_span_frames / widen))
        max_span = int(np.ceil(tp.max_span_frames * widen))
        fan1, fan2 = tp.query_first_fan_out, tp.query_second_fan_out
    else:
        min_gap, max_first = tp.min_gap_frames, tp.max_first_gap_frames
        min_span, max_span = tp.min_span_frames, tp.max_span_frames
        fan1, fan2 = tp.first_fan_out, tp.second_fan_out
    anchors = np.arange(n)
    first_b = np.searchsorted(frames, frames + min_gap, side="left")
    rows, b = _nth_following(frames, first_b, fan1, frames + max_first)
    a = anchors[rows]
    first_c = np.maximum(
        np.searchsorted(frames, frames[a] + min_span, side="left"),
        np.searchsorted(frames, frames[b] + min_gap, side="left"),
    )
    rows, c = _nth_following(frames, first_c, fan2, frames[a] + max_span)
    return a[rows], b[rows], c


def _cells(value: np.ndarray, edge: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Cell of each value (cells are [k, k + 1)), and the neighbouring cell to probe too when
    the value lies within `edge` of its cell's border (the cell itself when not, or when
    `edge` is None: the index side, which probes nothing)."""
    cell = np.floor(value).astype(np.int64)
    if edge is None:
        return cell, cell
    frac = value - cell
    other = np.where(frac < edge, cell - 1, np.where(frac > 1.0 - edge, cell + 1, cell))
    return cell, other


def triplet_hashes(
    peaks: Peaks,
    tp: TripletParams,
    min_bin: int,
    *,
    query: bool = False,
) -> Fingerprints:
    """Hashes of every triplet (form_triplets), with the anchor's frame as offset.

    `min_bin` is the lowest FFT bin peaks are searched in (FingerprintParams.min_bin): the
    pitch bands count from it. A query's triplets also carry the hashes with the neighbouring
    cell of every quantised value near a cell edge, and with the pitch bands a change of up to
    query_scale_tolerance could move the anchor into: several hashes per triplet, all with
    the same offset. Returns int32 hashes and offsets of shape (n,).
    """
    check_layout(tp)
    a, b, c = form_triplets(peaks, tp, query=query)
    frames = peaks.frames.astype(np.float64)
    pitch = semitones(peaks.bins)
    half = round(tp.max_interval_semitones / tp.interval_step_semitones)
    d_b = (pitch[b] - pitch[a]) / tp.interval_step_semitones
    d_c = (pitch[c] - pitch[a]) / tp.interval_step_semitones
    inside = (np.abs(d_b) <= half) & (np.abs(d_c) <= half)
    a, b, c, d_b, d_c = a[inside], b[inside], c[inside], d_b[inside], d_c[inside]
    ratio = (frames[b] - frames[a]) / (frames[c] - frames[a]) * tp.ratio_cells
    band_pos = (pitch[a] - semitones(np.array([min_bin]))[0]) / tp.band_semitones
    edge = tp.query_edge_fraction if query else None
    # Intervals are rounded (cells centred on whole steps), hence the half-step shift.
    fields = [
        _cells(np.clip(ratio, 0.0, tp.ratio_cells - 1e-9), edge),
        _cells(d_b + half + 0.5, edge),
        _cells(d_c + half + 0.5, edge),
    ]
    fields.append(_span_cells(frames[c] - frames[a], tp, query))
    band = np.floor(band_pos).astype(np.int64)
    if query:
        # The bands a pitch change of up to the tolerance could move the anchor into.
        reach = 12.0 * np.log2(1.0 + tp.query_scale_tolerance) / tp.band_semitones
        lo = np.floor(band_pos - reach).astype(np.int64)
        hi = np.floor(band_pos + reach).astype(np.int64)
        fields.append((np.where(lo < band, lo, band), np.where(hi > band, hi, band)))
    else:
        fields.append((band, band))
    offsets = peaks.frames[a].astype(np.int32)
    if not query:
        return Fingerprints(_pack(*(f[0] for f in fields), tp), offsets)
    hashes, offs = [], []
    for choice in range(1 << len(fields)):
        picked = [f[(choice >> i) & 1] for i, f in enumerate(fields)]
        new = np.ones(len(a), dtype=bool)
        for i, f in enumerate(fields):
            if (choice >> i) & 1:
                new &= f[1] != f[0]
        hashes.append(_pack(*(p[new] for p in picked), tp))
        offs.append(offsets[new])
    h, o = np.concatenate(hashes), np.concatenate(offs)
    order = np.argsort(o, kind="stable")
    return Fingerprints(h[order], o[order])


def _span_cells(
    span_frames: np.ndarray, tp: TripletParams, query: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The span cells of triplets `span_frames` long: (cell, cell) on the index side; on a
    query's, the lowest and highest cell its song's triplet could have been stored in. The
    stored span is within a frame of the song's true span (each peak rounds to a frame), and
    the query's within a frame of that span scaled by up to query_scale_tolerance, so the
    stored one lies within (query - 1) / (1 + tolerance) - 1 .. (query + 1) * (1 + tolerance) + 1
    frames. check_layout makes sure that never covers more than two cells."""
    if not query:
        stored = span_cell(span_frames, tp)
        return stored, stored
    widen = 1.0 + tp.query_scale_tolerance
    return (
        span_cell((span_frames - 1.0) / widen - 1.0, tp),
        span_cell((span_frames + 1.0) * widen + 1.0, tp),
    )


def span_cell(span_frames: np.ndarray, tp: TripletParams) -> np.ndarray:
    """The cell of a span (frames) on the log axis of span_cells cells from min_span_frames to
    max_span_frames; spans outside it fall into the end cells."""
    per_cell = np.log(tp.max_span_frames / tp.min_span_frames) / tp.span_cells
    position = np.log(np.maximum(span_frames, 1.0) / tp.min_span_frames) / per_cell
    return np.floor(np.clip(position, 0.0, tp.span_cells - 1e-9)).astype(np.int64)


def _pack(
    ratio: np.ndarray,
    d_b: np.ndarray,
    d_c: np.ndarray,
    span: np.ndarray,
    band: np.ndarray,
    tp: TripletParams,
) -> np.ndarray:
    """(ratio cell, interval cells, span cell, band) -> int32. A probed neighbour past either
    end of its field is clipped into it (a duplicate hash, harmless), so the layout never
    overflows."""
    ratio = np.clip(ratio, 0, tp.ratio_cells - 1)
    d_b = np.clip(d_b, 0, (1 << _INTERVAL_BITS) - 1)
    d_c = np.clip(d_c, 0, (1 << _INTERVAL_BITS) - 1)
    span = np.clip(span, 0, tp.span_cells - 1)
    band = np.clip(band, 0, (1 << _BAND_BITS) - 1)
    h = np.zeros(len(ratio), dtype=np.int64)
    for field, width in zip((band, d_c, d_b, span, ratio), TRIPLET_FIELD_BITS, strict=True):
        h = h << width | field
    return (h | TRIPLET_TAG).astype(np.int32)


def unpack_triplet_hashes(
    hashes: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of the packing: (ratio cell, span cell, interval cell of b, of c, band),
    int64."""
    h = hashes.astype(np.int64) & (TRIPLET_TAG - 1)
    fields = []
    for width in reversed(TRIPLET_FIELD_BITS):
        fields.append(h & ((1 << width) - 1))
        h = h >> width
    ratio, span, d_b, d_c, band = fields
    return ratio, span, d_b, d_c, band

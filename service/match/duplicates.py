"""A whole song against the catalogue: is it a recording the catalogue holds already?

Identification asks whether a clip plays somewhere in a song; a duplicate is a stronger
claim: the new song and a stored one are the same recording end to end. Both songs are cut
into chunks of `chunk_s`; a chunk is covered when enough of its landmarks match the other
song at one common time offset (a re-encoding, a resampled or quieter copy keeps every
landmark where it was). The song is a duplicate when, at that one offset, most of the audible
chunks of the new song and most of the stored song are covered, and enough of its landmarks
match there (`min_aligned_share`):

- the same recording re-encoded, in another container or sample rate, a few dB quieter, or
  with its leading and trailing silence trimmed covers nearly all of both, and keeps most of
  its landmarks where they were. When its start moved by a fraction of a 32-ms frame
  (trimmed silence, an encoder's delay), its spectrogram samples other instants and keeps
  far fewer on its own frame grid; analysed again on grids starting a fraction of a hop later
  (`hop_phases`; service/core/index.py does it for a candidate that covers both but keeps
  too few), one of them lies within an eighth of a frame of the stored song's and keeps most;
- the same piece rendered or mixed again may line up from end to end, but keeps only a
  fraction of its landmarks on every grid;
- a radio edit (a part cut out) or an extended mix (parts added or repeated) shares material
  at several offsets, each covering only the stretch between two edits;
- a live version or a remix shares no landmarks at a steady offset at all.

Pure numpy on the song's fingerprints and the stored hits of (a sample of) its hashes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.audio.hashes import Fingerprints
from service.store import Hits


@dataclass(frozen=True)
class DuplicateParams:
    #: Length of the chunks coverage is counted in (s).
    chunk_s: float = 5.0
    #: Landmarks of a chunk that must match at the common offset for it to count as covered.
    min_aligned_per_chunk: int = 3
    #: A chunk of the new song with fewer landmarks than this is silence or nearly so: it
    #: counts neither for nor against (trimmed or added silence changes nothing).
    min_landmarks_per_chunk: int = 6
    #: Frames by which matching landmarks may miss the common offset (re-encoding jitter).
    offset_tolerance_frames: int = 2
    #: Share of the new song's audible chunks and of the stored song's chunks that must be
    #: covered at the one offset for the two to be the same recording.
    min_coverage: float = 0.85
    #: Share of the new song's (sampled) landmarks that must match at that offset, on the
    #: frame grid where it keeps the most (`hop_phases`). Measured there on the development
    #: corpus, a copy keeps 32 % or more (most keep over half); the same piece rendered again
    #: keeps 25 % (the one such pair in the corpus) although it lines up from end to end. On
    #: its own grid a copy shifted by a fraction of a frame can keep as little as 26 %.
    min_aligned_share: float = 0.29
    #: Only hashes with `hash % hash_sample == 0` are looked up (the same subset on both
    #: sides, so alignment evidence keeps its density ratio), when the song has more than
    #: `sample_above` landmarks: a fraction of the lookup cost, ample evidence per chunk.
    hash_sample: int = 4
    sample_above: int = 8_000
    #: Candidates examined (most aligned landmarks first), and offsets tried per candidate.
    max_candidates: int = 5
    offsets_per_song: int = 3
    #: Frame grids a covered candidate is measured on before its share is judged: the new
    #: song's own and the ones starting 1/n, 2/n, ... (n - 1)/n of a hop later (n = 4: the
    #: best lies within 1/8 of a frame of the stored song's grid).
    hop_phases: int = 4


@dataclass(frozen=True)
class Overlap:
    """How much of a new song a stored song covers at one time offset."""

    song_id: int
    #: Stored frame minus new frame of the aligned landmarks.
    offset_frames: int
    #: Covered share of the new song's audible chunks, and of the stored song's chunks.
    new_coverage: float
    stored_coverage: float
    aligned: int
    #: Share of the new song's (sampled) landmarks that match at the offset.
    aligned_share: float = 0.0

    def is_covered(self, params: DuplicateParams) -> bool:
        """Whether the two line up over most of both at the offset (the share aside)."""
        return min(self.new_coverage, self.stored_coverage) >= params.min_coverage

    def is_duplicate(self, params: DuplicateParams) -> bool:
        return self.is_covered(params) and self.aligned_share >= params.min_aligned_share


def sampled(fingerprints: Fingerprints, params: DuplicateParams) -> Fingerprints:
    """The landmarks whose hashes take part in the comparison."""
    if len(fingerprints) <= params.sample_above or params.hash_sample <= 1:
        return fingerprints
    keep = (fingerprints.hashes % params.hash_sample) == 0
    return Fingerprints(fingerprints.hashes[keep], fingerprints.offsets[keep])


def _pairs(fp: Fingerprints, hits: Hits) -> tuple[np.ndarray, np.ndarray]:
    """(hit index, landmark index) of every hit and landmark sharing a hash."""
    order = np.argsort(fp.hashes, kind="stable")
    sorted_hashes = fp.hashes[order].astype(np.int64)
    hit_hashes = hits.hashes.astype(np.int64)
    left = np.searchsorted(sorted_hashes, hit_hashes, "left")
    counts = np.searchsorted(sorted_hashes, hit_hashes, "right") - left
    hit_index = np.repeat(np.arange(len(hits)), counts)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    within = np.arange(len(hit_index)) - starts
    return hit_index, order[np.repeat(left, counts) + within]


def overlaps(
    fp: Fingerprints, n_frames: int, hits: Hits, frame_s: float, params: DuplicateParams
) -> list[Overlap]:
    """The best-aligned stored songs of `hits` against the new song's landmarks `fp` (which
    spans `n_frames` frames of `frame_s` seconds), most aligned landmarks first."""
    if len(hits) == 0 or len(fp) == 0:
        return []
    hit_index, landmark = _pairs(fp, hits)
    if len(hit_index) == 0:
        return []
    song = hits.song_ids[hit_index].astype(np.int64)
    delta = hits.offsets[hit_index].astype(np.int64) - fp.offsets[landmark].astype(np.int64)
    shift = 2 * (int(n_frames) + 1)  # makes every delta non-negative
    span = 1 << 26
    keys, counts = np.unique(song * span + (delta + shift), return_counts=True)
    key_song = keys // span
    # The best offsets of each song: its most voted (song, delta) keys, at most
    # `offsets_per_song` of them (a track that repeats itself lines up at several offsets,
    # and the one covering most is not always the most voted), of the most voted songs.
    by_votes = np.lexsort((-counts, key_song))
    ordered_songs = key_song[by_votes]
    starts = np.flatnonzero(np.r_[True, ordered_songs[1:] != ordered_songs[:-1]])
    run = np.cumsum(np.r_[True, ordered_songs[1:] != ordered_songs[:-1]]) - 1
    rank = np.arange(len(by_votes)) - starts[run]  # of each key within its song's run
    leaders = by_votes[rank == 0]
    leaders = leaders[np.argsort(-counts[leaders], kind="stable")][: params.max_candidates]
    chosen_songs = set(key_song[leaders].tolist())
    best = [
        k
        for k, r in zip(by_votes, rank, strict=True)
        if r < params.offsets_per_song and int(key_song[k]) in chosen_songs
    ]
    chunk_frames = max(1, round(params.chunk_s / frame_s))
    landmark_chunks = fp.offsets.astype(np.int64) // chunk_frames
    chunk_ids, per_chunk = np.unique(landmark_chunks, return_counts=True)
    audible = set(chunk_ids[per_chunk >= params.min_landmarks_per_chunk].tolist())
    found: list[Overlap] = []
    for k in best:
        song_id = int(key_song[k])
        offset = int(keys[k] % span) - shift
        aligned = (song == song_id) & (np.abs(delta - offset) <= params.offset_tolerance_frames)
        if not aligned.any():
            continue
        new_chunks, new_counts = np.unique(landmark_chunks[landmark[aligned]], return_counts=True)
        covered_new = {
            int(c) for c in new_chunks[new_counts >= params.min_aligned_per_chunk]
        } & audible
        _, stored_counts = np.unique(
            hits.offsets[hit_index[aligned]].astype(np.int64) // chunk_frames, return_counts=True
        )
        covered_stored = int(np.count_nonzero(stored_counts >= params.min_aligned_per_chunk))
        stored_frames = int(hits.song_frames[hit_index[aligned]][0])
        stored_total = max(1, -(-stored_frames // chunk_frames))
        found.append(
            Overlap(
                song_id=song_id,
                offset_frames=offset,
                new_coverage=len(covered_new) / max(1, len(audible)),
                stored_coverage=min(1.0, covered_stored / stored_total),
                aligned=int(np.count_nonzero(aligned)),
                aligned_share=len(np.unique(landmark[aligned])) / len(fp),
            )
        )
    found.sort(key=lambda o: (-min(o.new_coverage, o.stored_coverage), -o.aligned_share))
    best_of_each: dict[int, Overlap] = {}
    for o in found:
        best_of_each.setdefault(o.song_id, o)
    return list(best_of_each.values())

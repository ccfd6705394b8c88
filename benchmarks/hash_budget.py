"""How much of a clip's song the lookup budgets still reach at a large catalogue, computed from
the hash distribution instead of measured on a catalogue of that size.

A budgeted lookup (service/core/identify/lookups.py) fetches a clip's hashes rarest first
until the budget's postings are spent. Whether a clip is found then depends on how many of
the hashes its song holds at the clip's place (its "song hashes") are among those fetched. At
N songs, a hash meets about p(hash) x N x fingerprints per song postings, with p the
distribution the synthetic catalogues are drawn from (benchmarks/hash_space.py), so the
coverage follows from p alone, at any N, in minutes.

Two distributions are compared, on the same clips (10-s clips of the indexed tracks that
hash_space.held_out names): p of every indexed track (the clip's song counts in p, and
synthetic songs drawn from it repeat the song's rare hashes) and p of the tracks held_out
does not name (the clip's song is not in it, as in a real catalogue, and as in the latency
benchmark's catalogues). Per kind of hash: the triplets ("fp2"'s speed-invariant tier) under
their first budget (MatchParams.max_hits_triplets per 10 s) and the lookup budget
(MatchParams.max_hits_per_lookup; the triplet tier asks what its first budget left out under
a fresh lookup budget, so it reaches a little more), and the second tier's dense landmarks
under the lookup budget.

    CORPUS_DIR=... python -m benchmarks.hash_budget [--sizes 10000,100000]
        [--conditions clean,speed_m5,white_snrm5] [--clips 40] [--write]
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import random
import sys
from dataclasses import dataclass

import numpy as np

from benchmarks.accuracy import corpus_dir
from benchmarks.benchmarks_md import this_command, write_section
from benchmarks.hash_space import hash_position, stored_distribution
from benchmarks.indexing import SYNTHETIC_SONG_S
from benchmarks.latency_clips import held_out_track, queries_dir
from service.audio.analysis import analyse_file, analyse_query
from service.audio.hashes import landmark_hashes
from service.audio.params import params_for_format
from service.audio.peaks import thin_peaks
from service.audio.triplets import triplet_hashes
from service.match import MatchParams

SECTION = "## Lookup budgets against hash frequencies (`benchmarks/hash_budget.py`)"
PARAMS = params_for_format("fp2")
#: Frames either side of a clip's place in its song within which a stored hash counts as the
#: song's (a 5 %-slow 10-s clip spans 10.5 s of its song).
MARGIN_FRAMES = 40


@dataclass(frozen=True)
class ClipHashes:
    condition: str
    #: The clip's hashes of each kind ("triplets", "dense"), and which of them its song holds
    #: at the clip's place.
    hashes: dict[str, np.ndarray]
    song: dict[str, np.ndarray]


def budget_reach(postings: np.ndarray, song: np.ndarray, budget: float) -> int:
    """How many of the song's hashes (`song`, a mask over the clip's distinct hashes) a
    lookup fetches when it takes the hashes rarest first (`postings`: each hash's expected
    postings) until `budget` postings are spent."""
    order = np.argsort(postings, kind="stable")
    fetched = np.cumsum(postings[order]) <= budget
    return int(np.count_nonzero(song[order][fetched]))


def _index_track(path: str) -> tuple[np.ndarray, np.ndarray, float]:
    audio = analyse_file(path, PARAMS, None)
    return audio.fingerprints.hashes, audio.fingerprints.offsets, audio.duration_s


def _clip(args: tuple[str, str, float]) -> tuple[str, dict[str, np.ndarray], float]:
    file, condition, start_s = args
    audio = analyse_query(queries_dir() / file, PARAMS, keep_samples=False)
    triplets = triplet_hashes(
        thin_peaks(audio.peaks, PARAMS), PARAMS.triplets, PARAMS.min_bin, query=True
    )
    sustained = audio.sustained_peaks if audio.sustained_peaks is not None else audio.peaks
    dense = landmark_hashes(sustained, PARAMS.for_queries())
    return condition, {"triplets": triplets.hashes, "dense": dense.hashes}, start_s


def clip_hashes(
    rows: list[dict[str, str]], songs: dict[str, tuple[np.ndarray, np.ndarray]], workers: int
) -> list[ClipHashes]:
    """Each clip's distinct hashes of each kind, and which its song holds near its place."""
    args = [(r["query_file"], r["condition"], float(r["start_s"])) for r in rows]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        analysed = pool.map(_clip, args)
    clips = []
    for (condition, kinds, start_s), row in zip(analysed, rows, strict=True):
        stored, offsets = songs[row["track_id"]]
        first_frame = start_s / PARAMS.frame_s - MARGIN_FRAMES
        last_frame = (start_s + 10.5) / PARAMS.frame_s + MARGIN_FRAMES
        near = np.unique(stored[(offsets >= first_frame) & (offsets <= last_frame)])
        distinct = {k: np.unique(h) for k, h in kinds.items()}
        clips.append(
            ClipHashes(condition, distinct, {k: np.isin(h, near) for k, h in distinct.items()})
        )
    return clips


def coverage_rows(
    clips: list[ClipHashes], p: np.ndarray, songs: int, per_song: float, mp: MatchParams
) -> dict[tuple[str, str], list[tuple[float, ...]]]:
    """Per (kind, condition), each clip's (distinct hashes, expected postings, song hashes,
    song hashes within the triplets' first budget, within the lookup budget)."""
    out: dict[tuple[str, str], list[tuple[float, ...]]] = {}
    for clip in clips:
        for kind, hashes in clip.hashes.items():
            postings = p[hash_position(hashes)] * songs * per_song
            song = clip.song[kind]
            out.setdefault((kind, clip.condition), []).append(
                (
                    len(hashes),
                    float(postings.sum()),
                    int(song.sum()),
                    budget_reach(postings, song, mp.max_hits_triplets),
                    budget_reach(postings, song, mp.max_hits_per_lookup),
                )
            )
    return out


def table(results: dict[int, dict[str, dict]], mp: MatchParams) -> list[str]:
    lines = [
        "| songs | hashes | clips | n | distinct hashes | postings met | song's hashes | "
        f"song's in the first {mp.max_hits_triplets:,} postings: song in p / held out | "
        f"in the first {mp.max_hits_per_lookup:,}: song in p / held out |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for songs, by_p in results.items():
        for key in by_p["held out"]:
            mine = np.median(np.array(by_p["in p"][key]), axis=0)
            held = np.median(np.array(by_p["held out"][key]), axis=0)
            kind, condition = key
            # Only the triplet tier has a first budget of its own.
            first = f"{mine[3]:.0f} / {held[3]:.0f}" if kind == "triplets" else "-"
            lines.append(
                f"| {songs:,} | {kind} | `{condition}` | {len(by_p['held out'][key])} | "
                f"{held[0]:,.0f} | {held[1] / 1e6:.1f} M | {held[2]:.0f} | "
                f"{first} | {mine[4]:.0f} / {held[4]:.0f} |"
            )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")],
                        default=[10_000, 100_000])  # fmt: skip
    parser.add_argument("--conditions", default="clean,speed_m5,white_snrm5")
    parser.add_argument("--clips", type=int, default=40, help="per condition")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    root = corpus_dir()
    with (queries_dir() / "index_tracks.csv").open() as f:
        tracks = {r["track_id"]: r["path"] for r in csv.DictReader(f)}
    with multiprocessing.get_context("fork").Pool(args.workers) as pool:
        indexed = pool.map(_index_track, [str(root / p) for p in tracks.values()])
    songs = {t: (h, o) for t, (h, o, _) in zip(tracks, indexed, strict=True)}
    seconds = sum(d for _, _, d in indexed)
    counted = [t for t, p in tracks.items() if not held_out_track(p)]
    per_song = sum(len(h) for h, _, _ in indexed) / seconds * SYNTHETIC_SONG_S
    with (queries_dir() / "queries.csv").open() as f:
        rows = [
            r
            for r in csv.DictReader(f)
            if r["indexed"] == "1"
            and r["clip_len_s"] == "10"
            and r["condition"] in args.conditions.split(",")
            and held_out_track(tracks[r["track_id"]])
        ]
    rng = random.Random(5)
    picked = []
    for condition in args.conditions.split(","):
        chosen = [r for r in rows if r["condition"] == condition]
        picked += rng.sample(chosen, min(args.clips, len(chosen)))
    clips = clip_hashes(picked, songs, args.workers)
    mp = MatchParams()
    distributions = {
        "in p": stored_distribution(np.concatenate([h for h, _ in songs.values()])),
        "held out": stored_distribution(np.concatenate([songs[t][0] for t in counted])),
    }
    results = {
        n: {name: coverage_rows(clips, p, n, per_song, mp) for name, p in distributions.items()}
        for n in args.sizes
    }
    lines = [
        f"10-s clips of the {len(tracks) - len(counted)} indexed tracks held out of the "
        f"distribution, {args.clips} per condition; index format fp2 ({per_song:,.0f} "
        "fingerprints per 4-min song). Medians over the clips: distinct hashes of the kind, "
        "postings they meet at that size, how many of them the clip's song holds near its "
        "place, and how many of those a lookup reaches that takes the rarest hashes first "
        "under the triplets' first budget and under the lookup budget, with p drawn from "
        "every indexed track (the clip's song counts in it) / from the "
        f"{len(counted)} not held out (it does not, as in a real catalogue):",
        "",
        *table(results, mp),
    ]
    print("\n".join(lines))
    if args.write:
        write_section("hash_budget", SECTION, this_command("benchmarks.hash_budget"), lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

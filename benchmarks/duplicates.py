"""Near-duplicate detection on real music: every re-encoded copy found, no other track merged.

1. Every track of the development corpus is indexed into a fresh SQLite catalogue with the
   duplicate check on: a track found to be "the same recording" as another is a false merge
   (the corpus holds no two copies of one recording).
2. For `--tracks` of them (seeded choice, looped tracks left out: an edit of a loop is the loop
   again), copies are made with ffmpeg into `--scratch` (never into the corpus) and checked
   against the catalogue (nothing is added): re-encodings must be found as their track, edits
   (a radio edit, an extended mix) must not be found at all.

Landmarks kept: as the check measured them (on the copy's own frame grid, or at its best hop
phase when the own grid kept too few), and at the best hop phase for every copy (what
`min_aligned_share` is judged against). Tracks of the corpus that lined up with another one
over most of both, so that the check measured them at other hop phases too, are named with
their best share.

    CORPUS_DIR=/work/corpus python -m benchmarks.duplicates --tracks 24 --scratch /tmp/dups
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import math
import os
import platform
import random
import statistics
import subprocess
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from benchmarks.benchmarks_md import this_command, write_section
from service.audio.analysis import AnalysedAudio, PhaseAnalysis, analyse_file
from service.audio.envelopes import DEFAULT_ENVELOPE
from service.core.index import (
    IndexOptions,
    PhaseAnalyser,
    compare_recordings,
    index_song,
    phase_analyser,
)
from service.match.duplicates import DuplicateParams
from service.resources import PoolSpec, open_resources
from service.settings import Settings

#: name -> (suffix, ffmpeg audio filter or None, codec arguments, expected: same recording?)
VARIANTS: dict[str, tuple[str, str | None, list[str], bool]] = {
    "MP3 192 kbit/s": (".mp3", None, ["-c:a", "libmp3lame", "-b:a", "192k"], True),
    "FLAC at 44.1 kHz": (".flac", None, ["-c:a", "flac", "-ar", "44100"], True),
    "Opus 96 kbit/s at 48 kHz": (".opus", None, ["-c:a", "libopus", "-b:a", "96k"], True),
    "silence trimmed, -4 dB, MP3 128k": (
        ".mp3",
        # Leading silence off, reversed, leading (= trailing) silence off, back: only the ends.
        "silenceremove=start_periods=1:start_threshold=-50dB:detection=peak,areverse,"
        "silenceremove=start_periods=1:start_threshold=-50dB:detection=peak,areverse,"
        "volume=-4dB",
        ["-c:a", "libmp3lame", "-b:a", "128k"],
        True,
    ),
    "radio edit (middle 25 % cut out)": (".mp3", "EDIT", ["-c:a", "libmp3lame"], False),
    "extended mix (middle 30 % twice)": (".mp3", "EXTEND", ["-c:a", "libmp3lame"], False),
}


@dataclass
class Outcome:
    right: int = 0
    wrong: int = 0
    none: int = 0
    coverages: list[float] | None = None
    shares: list[float] | None = None
    #: Landmarks kept at the best of the hop phases, every covered copy measured there.
    best_phase_shares: list[float] | None = None


def _ffmpeg(source: Path, out: Path, audio_filter: str | None, codec: list[str], dur: float):
    if audio_filter in ("EDIT", "EXTEND"):
        a, b = 0.375 * dur, 0.625 * dur  # the middle quarter
        if audio_filter == "EDIT":
            graph = (
                f"[0:a]atrim=0:{a:.3f},asetpts=N/SR/TB[x];"
                f"[0:a]atrim={b:.3f},asetpts=N/SR/TB[y];[x][y]concat=n=2:v=0:a=1[out]"
            )
        else:
            a, b = 0.35 * dur, 0.65 * dur
            graph = (
                f"[0:a]atrim=0:{b:.3f},asetpts=N/SR/TB[x];"
                f"[0:a]atrim={a:.3f},asetpts=N/SR/TB[y];[x][y]concat=n=2:v=0:a=1[out]"
            )
        args = ["-filter_complex", graph, "-map", "[out]"]
    else:
        args = ["-af", audio_filter] if audio_filter else []
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(source), "-vn"]
    subprocess.run([*cmd, *args, *codec, str(out)], check=True)


def _noting(
    phases: PhaseAnalyser,
    noted: list[tuple[dict[str, str], AnalysedAudio]],
    track: dict[str, str],
    audio: AnalysedAudio,
) -> PhaseAnalyser:
    """`phases`, noting `track` when the duplicate check calls it."""

    async def analyse(hop_phases: int) -> list[PhaseAnalysis]:
        noted.append((track, audio))
        return await phases(hop_phases)

    return analyse


def _spread(values: list[float] | None) -> str:
    if not values:
        return "-"
    return f"{min(values):.2f} / {statistics.median(values):.2f}"


async def run(args: argparse.Namespace) -> list[str]:
    corpus = Path(args.corpus)
    with (corpus / "manifest.csv").open() as f:
        tracks = list(csv.DictReader(f))
    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    db = scratch / "catalogue.sqlite3"
    if db.exists() and not args.reuse:
        db.unlink()
    settings = Settings(database_url=f"sqlite:///{db}", environment="test", log_level="WARNING")
    started = time.monotonic()
    merged: list[tuple[str, int]] = []
    ids: dict[str, int] = {}
    async with open_resources(settings, pool=PoolSpec(args.workers)) as resources:
        store, pool, fp_params = resources.store, resources.pool, resources.fp_params
        assert pool is not None
        # Tracks that lined up with a stored one over most of both but kept too few landmarks
        # on their own grid, so that the check measured them at other hop phases too.
        rephased: list[tuple[dict[str, str], AnalysedAudio]] = []
        for t in tracks:
            path = corpus / t["path"]
            known = await store.find_by_source(str(path))
            if known is None:
                audio = await pool.run(
                    partial(analyse_file, str(path), fp_params, DEFAULT_ENVELOPE)
                )
                phases = _noting(phase_analyser(pool, path, fp_params), rephased, t, audio)
                indexed = await index_song(
                    store, audio, IndexOptions(source=str(path)), phases=phases
                )
                if indexed.duplicate is not None:
                    merged.append((t["track_id"], indexed.song.id))
                ids[t["track_id"]] = indexed.song.id
            else:
                ids[t["track_id"]] = known.id
        index_s = time.monotonic() - started
        print(f"indexed {len(tracks)} tracks in {index_s:.0f} s; merged: {merged}")
        near: list[str] = []
        for t, audio in rephased:
            path = corpus / t["path"]
            compared = await compare_recordings(
                store,
                audio,
                exclude=ids[t["track_id"]],
                phases=phase_analyser(pool, path, fp_params),
            )
            o = compared[0]
            other = await store.get_song(o.song_id)
            near.append(
                f"`{t['path']}` lines up with `{other.source if other else o.song_id}` over "
                f"{min(o.new_coverage, o.stored_coverage):.0%} of both and keeps "
                f"{o.aligned_share:.1%} of its landmarks at its best hop phase"
            )
        print("rephased:", near)
        candidates = [t for t in tracks if not t["loop_period_s"] and t["track_id"] in ids]
        chosen = random.Random(args.seed).sample(candidates, min(args.tracks, len(candidates)))
        outcomes = {
            name: Outcome(coverages=[], shares=[], best_phase_shares=[]) for name in VARIANTS
        }
        params = DuplicateParams()
        # No share is enough: every covered candidate is measured on every hop phase.
        every_phase = replace(params, min_aligned_share=math.inf)
        for t in chosen:
            source, dur = corpus / t["path"], float(t["duration_s"])
            for name, (suffix, audio_filter, codec, _same) in VARIANTS.items():
                out = scratch / f"{t['track_id']}-{list(VARIANTS).index(name)}{suffix}"
                if not out.exists():
                    _ffmpeg(source, out, audio_filter, codec, dur)
                audio = await pool.run(partial(analyse_file, str(out), fp_params, DEFAULT_ENVELOPE))
                phases = phase_analyser(pool, out, fp_params)
                compared = await compare_recordings(store, audio, params, phases=phases)
                found = next((o for o in compared if o.is_duplicate(params)), None)
                best = compared[0] if compared else None
                at_best_phase = await compare_recordings(store, audio, every_phase, phases=phases)
                o = outcomes[name]
                if best is not None:
                    assert o.coverages is not None and o.shares is not None
                    assert o.best_phase_shares is not None
                    o.coverages.append(min(best.new_coverage, best.stored_coverage))
                    o.shares.append(best.aligned_share)
                    o.best_phase_shares.append(at_best_phase[0].aligned_share)
                if found is None:
                    o.none += 1
                elif found.song_id == ids[t["track_id"]]:
                    o.right += 1
                else:
                    o.wrong += 1
                verdict = "-" if found is None else found.song_id
                print(f"{t['track_id']} {name}: {verdict} (expected {ids[t['track_id']]})")
    lined_up = (
        "Tracks lining up with another over most of both, measured at other hop phases: "
        + ("; ".join(near) if near else "none")
        + "."
    )
    lines = [
        f"{len(tracks)} corpus tracks indexed with the duplicate check: "
        f"**{len(merged)} merged** with another track. {lined_up}",
        "",
        f"Copies of {len(chosen)} tracks (seeded choice, looped tracks left out), checked "
        "against that catalogue:",
        "",
        "| copy | expected | found as its track | found as another track | not found "
        "| its track's coverage, min / median | landmarks kept as checked, min / median "
        "| landmarks kept at the best hop phase, min / median |",
        "|---|---|---:|---:|---:|---|---|---|",
    ]
    for name, o in outcomes.items():
        same = VARIANTS[name][3]
        expected = "same recording" if same else "another recording"
        lines.append(
            f"| {name} | {expected} | {o.right} | {o.wrong} | {o.none} "
            f"| {_spread(o.coverages)} | {_spread(o.shares)} | {_spread(o.best_phase_shares)} |"
        )
    lines += [
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other work; "
        f"{args.workers} analysis process(es); {datetime.now(UTC):%Y-%m-%d}. Indexing the "
        f"corpus with the check took {index_s:.0f} s.",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=os.environ.get("CORPUS_DIR", "corpus"))
    parser.add_argument("--scratch", required=True, help="where the copies are written")
    parser.add_argument("--tracks", type=int, default=24)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=26)
    parser.add_argument("--reuse", action="store_true", help="keep the scratch catalogue")
    parser.add_argument("--write", action="store_true", help="write the table to BENCHMARKS.md")
    args = parser.parse_args()
    lines = asyncio.run(run(args))
    print("\n".join(lines))
    if args.write:
        write_section(
            "duplicates",
            "## Near-duplicates on real music (`benchmarks/duplicates.py`)",
            this_command("benchmarks.duplicates", args.corpus),
            lines,
        )


if __name__ == "__main__":
    main()

"""The tables of benchmarks/latency.py, from its accumulated results.

`results` maps a catalogue size (songs, as a string) to one measurement of it: `formats`, per
index format, the catalogue (`size`), how it was grown (`load`), the processes' resident size
at rest, after the warm-up requests (`idle`), and the stage profile (`profile`, "fp1" only); and
`samples`, one per request, each naming its format.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Iterator

import numpy as np

from benchmarks.latency_clips import KINDS, kind_of
from benchmarks.latency_profile import REFERENCE, STAGES
from service.audio.params import params_for_format

#: The targets: server-side p50 ms at this many songs, the ratio of an unknown or
#: speed-changed clip's p50 to a known clip's at every size, and MB per request.
TARGET_SONGS = 10_000
TARGET_KNOWN_MS, TARGET_UNKNOWN_MS = 30.0, 60.0
TARGET_RATIO = 2.0
TARGET_REQUEST_MB = 200.0


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def formats_of(results: dict[str, dict]) -> list[str]:
    return sorted({f for r in results.values() for f in r["formats"]})


def by_kind(samples: list[dict], fmt: str, kind: str) -> list[dict]:
    return [s for s in samples if s.get("format", "fp1") == fmt and kind_of(s) == kind]


def p50_ratio(samples: list[dict], fmt: str, kind: str) -> float:
    """p50 server ms of `kind` over that of known clips, one format."""
    known = [s["server_ms"] for s in by_kind(samples, fmt, "known")]
    mine = [s["server_ms"] for s in by_kind(samples, fmt, kind)]
    return pct(mine, 50) / pct(known, 50) if known and mine else float("nan")


def peaks_mb(measured: dict, fmt: str) -> tuple[float, float] | None:
    """The pool worker's and the service process's resident peaks over the requests of
    `fmt`; None when they were not measured."""
    samples = [s for s in measured["samples"] if s.get("format", "fp1") == fmt]
    if not samples or "pool_peak_mb" not in samples[0]:
        return None
    return (
        max(s.get("pool_peak_mb", 0.0) for s in samples),
        max(s.get("service_peak_mb", 0.0) for s in samples),
    )


def request_mb_bound(measured: dict, fmt: str) -> float:
    """The most resident memory any one request of `fmt` can have needed: the pool worker's
    and the service process's peaks over the run, above their size at rest (requests go one
    at a time, and both processes keep freed memory for reuse, so a peak stays the working
    set of the request that reached it). At rest is after the warm-up for the pool worker,
    which decodes every clip alike; for the service, before it when that was read
    (`started`): a warm-up clip that climbs the tiers leaves the service as large as a
    request that does, and the bound above it would say nothing."""
    peaks = peaks_mb(measured, fmt)
    if peaks is None:
        return float("nan")
    idle = measured["formats"][fmt].get("idle", {})
    started = measured["formats"][fmt].get("started", {}).get("service_rss_mb")
    rest_mb = min(
        (mb for mb in (idle.get("service_rss_mb"), started) if mb is not None), default=0.0
    )
    pool_mb = peaks[0] - idle.get("pool_rss_mb", 0.0)
    return max(0.0, pool_mb) + max(0.0, peaks[1] - rest_mb)


def measured_formats(sizes: list[dict], formats: list[str]) -> Iterator[tuple[dict, str]]:
    """(measurement, format) for every size and every format measured at it, in order."""
    for r in sizes:
        for f in formats:
            if f in r["formats"]:
                yield r, f


def _ms(x: float) -> str:
    return f"{x:,.0f}" if np.isfinite(x) else "-"


def _x(x: float) -> str:
    return f"{x:.1f}x" if np.isfinite(x) else "-"


def _share(samples: list[dict], key: str) -> str:
    return f"{sum(s[key] for s in samples) / len(samples):.0%}" if samples else "-"


def _mb(samples: list[dict], key: str) -> str:
    values = [s[key] for s in samples if key in s]
    return f"{pct(values, 50):,.0f} / {max(values):,.0f}" if values else "-"


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def kind_table(
    sizes: list[dict],
    formats: list[str],
    head: list[str],
    cells: Callable[[dict, str, dict[str, list[dict]]], list[str]],
) -> list[str]:
    """A table of one row per catalogue size and kind of clip measured at it: `songs`, `clips`,
    then the `head` columns, filled by `cells(measured, kind, samples of the kind per format)`."""
    lines = [
        "| songs | clips | " + " | ".join(head) + " |",
        "|---|---|" + "---|" * len(head),
    ]
    for r in sizes:
        for kind, label in KINDS:
            per = {f: by_kind(r["samples"], f, kind) for f in formats}
            if not any(per.values()):
                continue
            lines.append(f"| {_songs(r):,} | {label} | " + " | ".join(cells(r, kind, per)) + " |")
    return lines


def latency_table(sizes: list[dict], formats: list[str]) -> list[str]:
    def cells(r: dict, kind: str, per: dict[str, list[dict]]) -> list[str]:
        row = [str(max(len(v) for v in per.values()))]
        for f in formats:
            ms = [s["server_ms"] for s in per[f]]
            ratio = "1.0x" if kind == "known" else _x(p50_ratio(r["samples"], f, kind))
            row += [_ms(pct(ms, 50)), _ms(pct(ms, 95)), ratio]
        return row + [_share(per[f], "right_top") for f in formats]

    head = ["n"]
    for f in formats:
        head += [f"{f} p50 ms", f"{f} p95 ms", f"{f} p50 / known"]
    return kind_table(sizes, formats, head + [f"{f} right" for f in formats], cells)


def memory_table(sizes: list[dict], formats: list[str]) -> list[str]:
    def cells(_r: dict, _kind: str, per: dict[str, list[dict]]) -> list[str]:
        row: list[str] = []
        for f in formats:
            row += [_mb(per[f], "pool_added_mb"), _mb(per[f], "service_added_mb")]
        return row

    head: list[str] = []
    for f in formats:
        head += [f"{f} pool worker MB", f"{f} service MB"]
    lines = kind_table(sizes, formats, head, cells)
    lines += [
        "",
        "| songs | format | postings MB | pool worker RSS MB at rest / peak | service RSS MB "
        "started / at rest / peak | most one request can have needed, MB |",
        "|---|---|---|---|---|---|",
    ]
    for r, f in measured_formats(sizes, formats):
        idle = r["formats"][f].get("idle", {})
        started = r["formats"][f].get("started", {}).get("service_rss_mb")
        pool, service = peaks_mb(r, f) or (0.0, 0.0)
        lines.append(
            f"| {_songs(r):,} | {f} | "
            f"{r['formats'][f]['size'].get('postings_bytes', 0) / 1e6:,.0f} | "
            f"{idle.get('pool_rss_mb', 0):,.0f} / {pool:,.0f} | "
            f"{'-' if started is None else f'{started:,.0f}'} / "
            f"{idle.get('service_rss_mb', 0):,.0f} / {service:,.0f} | "
            f"{request_mb_bound(r, f):,.0f} |"
        )
    return lines


def targets_table(sizes: list[dict], formats: list[str]) -> list[str]:
    lines = [
        "| target | songs | " + " | ".join(formats) + " |",
        "|---|---|" + "---|" * len(formats),
    ]
    for kind, what in (("unknown", "unknown clip"), ("speed", "speed-changed clip")):
        for r in sizes:
            cells = []
            for f in formats:
                x = p50_ratio(r["samples"], f, kind)
                cells.append(f"{_x(x)}, {_met(x <= TARGET_RATIO)}" if np.isfinite(x) else "-")
            lines.append(
                f"| {what} p50 <= {TARGET_RATIO:.0f}x a known clip's | {_songs(r):,} | "
                + " | ".join(cells)
                + " |"
            )
    for r in sizes:
        if _songs(r) != TARGET_SONGS:
            continue
        for kind, limit in (("known", TARGET_KNOWN_MS), ("unknown", TARGET_UNKNOWN_MS)):
            cells = []
            for f in formats:
                ms = pct([s["server_ms"] for s in by_kind(r["samples"], f, kind)], 50)
                cells.append(f"{_ms(ms)} ms, {_met(ms <= limit)}" if np.isfinite(ms) else "-")
            lines.append(
                f"| {kind} clip p50 <= {limit:.0f} ms | {_songs(r):,} | " + " | ".join(cells) + " |"
            )
    for r in sizes:
        cells = []
        for f in formats:
            mb = request_mb_bound(r, f) if f in r["formats"] else float("nan")
            cells.append(
                f"{mb:,.0f} MB, {_met(mb <= TARGET_REQUEST_MB)}" if np.isfinite(mb) else "-"
            )
        lines.append(
            f"| memory per request <= {TARGET_REQUEST_MB:.0f} MB | {_songs(r):,} | "
            + " | ".join(cells)
            + " |"
        )
    return lines


def profile_tables(sizes: list[dict]) -> list[str]:
    """Where the fp1 server-side milliseconds go, and the cap and budget side by side."""
    profiled = [r for r in sizes if r["formats"].get("fp1", {}).get("profile")]
    if not profiled:
        return []
    lines = [
        "",
        "**Where the server-side milliseconds go, fp1** (the same pipeline in one process, a "
        "timer per stage, mean ms per clip, grouped by the tiers a clip needed: 1 = "
        "index-density landmarks, 2 = the denser query landmarks, 3 = the speed grid; each "
        "tier looks up only hashes not fetched yet, and its lookup and voting add to the "
        "columns; the reference matcher, `benchmarks/reference_matching.py`, votes on the "
        "same hits):",
        "",
        "| songs | tiers | n | decode | fingerprint | lookup SQL | hit decode | voting "
        "| speed variants | hits | lookup MB | voting, reference matcher |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in profiled:
        profile = r["formats"]["fp1"]["profile"]
        for label, tiers in (("tier 1", 1), ("tiers 1-2", 2), ("tiers 1-3 (speed grid)", 3)):
            rows = [p for p in profile if p["tiers"] == tiers]
            if not rows:
                continue
            mean = {k: float(np.mean([p[k] for p in rows])) for k in (*STAGES, "hits", REFERENCE)}
            mb = float(np.mean([p["lookup_bytes"] for p in rows])) / 1e6
            lines.append(
                f"| {_songs(r):,} | {label} | {len(rows)} | "
                + " | ".join(f"{mean[k]:,.1f}" for k in STAGES)
                + f" | {mean['hits']:,.0f} | {mb:.1f} | {mean[REFERENCE]:,.1f} |"
            )
    lines += [
        "",
        "**The frequent-hash cap and the first tier's budget, fp1** (each profiled clip's "
        "first tier looked up and voted on without the cap, with it, and with the cap and "
        "`MatchParams.max_hits_first_tier`, the rarest hashes first; lookup SQL + hit "
        "decoding + voting, mean ms; the capped and budgeted runs alternate which goes first):",
        "",
        "| songs | cap (postings) | clips | hits without | hits with | hits budgeted "
        "| ms without | ms with | ms budgeted | same top song (cap) | same top (budget) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in profiled:
        rows = r["formats"]["fp1"]["profile"]
        keys = ("uncapped_hits", "capped_hits", "budget_hits", "uncapped_ms", "capped_ms")
        mean = {k: float(np.mean([p[k] for p in rows])) for k in (*keys, "budget_ms")}
        n = len(rows)
        lines.append(
            f"| {_songs(r):,} | {r['formats']['fp1']['size'].get('cap', 0):,.0f} | {n} | "
            f"{mean['uncapped_hits']:,.0f} | {mean['capped_hits']:,.0f} | "
            f"{mean['budget_hits']:,.0f} | {mean['uncapped_ms']:,.1f} | "
            f"{mean['capped_ms']:,.1f} | {mean['budget_ms']:,.1f} | "
            f"{sum(p['cap_same_top'] for p in rows):.0f}/{n} | "
            f"{sum(p['budget_same_top'] for p in rows):.0f}/{n} |"
        )
    return lines


def storage_table(sizes: list[dict], formats: list[str]) -> list[str]:
    lines = [
        "| songs | format | hours | fingerprints | fingerprints per s of song | index MB "
        "| MB per hour | bytes per fingerprint |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r, f in measured_formats(sizes, formats):
        z = r["formats"][f]["size"]
        lines.append(
            f"| {z['songs']:,.0f} | {f} | {z['hours']:,.0f} | {z['fingerprints']:,.0f} | "
            f"{z['fingerprints'] / z['hours'] / 3600:.0f} | {z['index_bytes'] / 1e6:,.0f} | "
            f"{z['index_bytes'] / 1e6 / z['hours']:.1f} | "
            f"{z['index_bytes'] / z['fingerprints']:.1f} |"
        )
    return lines


def _songs(r: dict) -> int:
    return int(next(iter(r["formats"].values()))["size"]["songs"])


def _buffers_gb(sizes: list[dict]) -> str:
    found = {
        m["size"].get("shared_buffers_bytes") for r in sizes for m in r["formats"].values()
    } - {None}
    return " / ".join(f"{b / 2**30:.1f} GiB" for b in sorted(found)) or "(not recorded)"


def report(results: dict[str, dict]) -> list[str]:
    sizes = sorted(results.values(), key=_songs)
    formats = formats_of(results)
    dates = sorted({r.get("measured", "")[:10] for r in sizes} - {""})
    loads = ", ".join(
        f"{_songs(r):,} songs {max(r['load_average']):.1f}" for r in sizes if "load_average" in r
    )
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other work, "
        f"PostgreSQL on the same host; Python {platform.python_version()}. One service per "
        "index format (`song-detection serve`, `FINGERPRINT_FORMAT` of its catalogue, "
        "`CPU_WORKERS=1`; fingerprints "
        + ", ".join(params_for_format(f).version for f in formats)
        + "), both running at each size; requests one at a time, alternating "
        "between the formats clip by clip. PostgreSQL shared_buffers "
        f"{_buffers_gb(sizes)}; before each size both postings tables and their indexes are "
        "read with `pg_prewarm` (into shared_buffers as far as they fit, the rest stays in the "
        "OS page cache). Measured "
        + ", ".join(dates)
        + (f"; 1-minute load average during the requests (highest): {loads}." if loads else "."),
        "",
        "**`POST /identify` server-side latency against catalogue size, index formats side by "
        "side** (`elapsed_ms`: decode to answer; 10-s clips of the indexed corpus tracks, and "
        "unknown clips of its unindexed tracks, music the catalogue lacks; the catalogue is the "
        "indexed tracks plus synthetic 4-min songs with as many fingerprints per second, of "
        "each kind, as those tracks store under the format, their hashes drawn from half of "
        "the indexed tracks' and the known clips taken from the other half, whose rare hashes "
        "the synthetic songs therefore do not repeat; 'p50 / known' is the kind's p50 "
        "over the known clips' p50 of the same format and size; 'right' is the right song on "
        "top, for unknown clips no match):",
        "",
        *latency_table(sizes, formats),
        "",
        "**Memory per request** (resident MB a request added to each process, p50 / max: the "
        "pool worker that decodes and fingerprints, its high-water mark reset before the "
        "request, `echo 5 > /proc/PID/clear_refs`, and `VmHWM` read after, against its `VmRSS` "
        "before; the same for the service's own process, which looks up and votes. Both keep "
        "freed memory for reuse (service/memory.py), so a request adds only what earlier ones "
        "did not already leave mapped; the second table bounds what any one request needed by "
        "each process's peak over the run above its size at rest: the pool worker's read after "
        "three warm-up requests of known clips, which leave what any serving process holds "
        "(imports, pools, caches), the service's before them, as started, since a warm-up "
        "clip may climb the tiers and leave the service as large as any request):",
        "",
        *memory_table(sizes, formats),
        "",
        "**Against the targets** (server-side p50; memory: the bound of the table above):",
        "",
        *targets_table(sizes, formats),
        *profile_tables(sizes),
        "",
        "**PostgreSQL bytes per hour of audio** (`pg_total_relation_size` of `fp_postings`, "
        "the delta and tombstones, after `VACUUM`):",
        "",
        *storage_table(sizes, formats),
    ]
    return lines

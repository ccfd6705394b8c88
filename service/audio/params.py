"""Every fingerprinting tunable, in one place, with its unit.

The parameters are part of the index format: hashes made with other values do not match the
stored ones. `FingerprintParams.version` is recorded in the store when it is created, and the
service refuses to start against a store built with another version.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from typing import Literal

#: The index formats: "fp1" stores landmark pairs; "fp2" stores them and speed-invariant
#: triplets (service/audio/triplets.py), which find a clip played up to +-10 % faster, slower
#: or shifted in pitch with one lookup instead of a grid of speeds.
FingerprintFormat = Literal["fp1", "fp2"]


@dataclass(frozen=True)
class TripletParams:
    """The tunables of the speed-invariant triplet hashes (service/audio/triplets.py), with
    units. Every field not starting with `query_` is part of the index format."""

    #: Target zone of b: frames after the anchor (inclusive).
    min_gap_frames: int = 2
    max_first_gap_frames: int = 40
    #: Target zone of c: frames after the anchor (inclusive); c also lies at least
    #: min_gap_frames after b. Longer spans quantise the gap ratio more finely: a frame of
    #: rounding moves the ratio by about 1 / span.
    min_span_frames: int = 10
    max_span_frames: int = 72
    #: b candidates per anchor and c candidates per (anchor, b), nearest in time first:
    #: first_fan_out x second_fan_out triplets per anchor at most (3 x 2: some 50 a second
    #: of audio, beside the landmarks' 125).
    first_fan_out: int = 3
    second_fan_out: int = 2
    #: Largest interval |p_b - p_a|, |p_c - p_a| kept (semitones).
    max_interval_semitones: float = 31.5
    #: Quantisation step of the intervals (semitones).
    interval_step_semitones: float = 0.5
    #: Cells of the gap ratio over (0, 1).
    ratio_cells: int = 32
    #: Width of the anchor's pitch band (semitones).
    band_semitones: float = 6.0
    #: Cells of the triplet's span t_c - t_a, on a log axis from min_span_frames to
    #: max_span_frames (4: each 1.64x wider than the last). A time scale multiplies the span,
    #: so it is no invariant, but a change of up to query_scale_tolerance moves it by less
    #: than a cell, and the query probes the cells it could have been stored in: a fraction of
    #: the speed invariance traded for hashes four times as specific.
    span_cells: int = 4
    #: Bumped by hand when the meaning of the hash layout changes without a field changing.
    layout_revision: int = 1

    #: The triplets stored beside the landmarks (index format "fp2"); None: landmarks only
    #: ("fp1").
    triplets: TripletParams | None = None

    # --- query side only (not part of the index format) --------------------------------------
    #: Targets per anchor and per (anchor, b) of a query: its extra peaks (noise, denser
    #: picking) push the index's targets further down the list.
    query_first_fan_out: int = 6
    query_second_fan_out: int = 6
    #: Largest change of time scale and of pitch (as a ratio - 1) a query is hashed for: its
    #: target zone is widened by this much, and the bands near the anchor's are probed.
    query_scale_tolerance: float = 0.11
    #: A quantised interval or gap ratio within this fraction of a cell of its cell's edge is
    #: also hashed with the neighbouring cell.
    query_edge_fraction: float = 0.2


@dataclass(frozen=True)
class FingerprintParams:
    # --- signal -----------------------------------------------------------------------------
    #: Rate (Hz) everything is resampled to. 8 kHz keeps the band that survives telephone lines
    #: and low-bitrate codecs (up to 4 kHz) and makes the STFT cheap.
    sample_rate_hz: int = 8000
    #: STFT window length (samples); 1024 at 8 kHz is 128 ms, long enough to resolve tonal peaks
    #: 7.8 Hz apart and to average broadband noise down.
    n_fft: int = 1024
    #: STFT hop (samples); 256 at 8 kHz is 32 ms, the time unit of every offset in the index.
    hop: int = 256
    #: Lowest and highest FFT bin searched for peaks (bin 13 is ~100 Hz; hum and rumble below it
    #: carry little identity, and bins near Nyquist are mostly codec artefacts).
    min_bin: int = 13
    max_bin: int = 480

    # --- peaks ------------------------------------------------------------------------------
    #: Half-size of the local-maximum neighbourhood in bins and frames: a peak dominates
    #: +-peak_bins x +-peak_frames around it, which spreads landmarks over the plane.
    peak_bins: int = 12
    peak_frames: int = 8
    #: A peak must stand this many dB above the local mean spectrum (computed over a wider
    #: window) so that flat noise floors produce no landmarks.
    peak_over_mean_db: float = 6.0
    #: Half-size of the local mean window in bins and frames.
    mean_bins: int = 32
    mean_frames: int = 32
    #: A peak survives only if fewer than `density_peaks` more prominent peaks lie within
    #: +-density_frames of it. This bounds the density (about density_peaks per
    #: 2 * density_frames + 1 frames) whatever the music, and unlike fixed blocks it does not
    #: depend on where the clip happens to start.
    density_frames: int = 16
    density_peaks: int = 20
    #: The density limit applies within each of this many bands of equal width in log
    #: frequency (100-250-610-1500-3750 Hz for 4; density_peaks shared equally among them), so
    #: that loud sound in one band (speech, a kick drum) cannot crowd out the other bands'
    #: peaks. Measured on the development corpus against one limit for the whole range (1):
    #: babble at 0 dB 86 % vs 83 % of 10-s clips found, white noise at -5 dB 88.6 % vs 86.2 %
    #: of 5-s clips, false positives 5.7 % vs 12.9 % (10 s) and 0 % vs 5.7 % (5 s), and an
    #: index a third smaller (126 vs 186 fingerprints per second of audio).
    density_bands: int = 4
    #: Magnitude floor (dBFS of a full-scale sine); digital silence yields no peaks at all.
    floor_db: float = -90.0

    # --- pairing ----------------------------------------------------------------------------
    #: Target zone: frames after the anchor (inclusive range) and +-bins around it.
    min_dt_frames: int = 1
    max_dt_frames: int = 63
    max_df_bins: int = 127
    #: Targets paired with each anchor (nearest in time first).
    fan_out: int = 10

    #: Bumped by hand when the meaning of the hash layout changes without a field changing.
    layout_revision: int = 1

    #: The triplets stored beside the landmarks (index format "fp2"); None: landmarks only
    #: ("fp1").
    triplets: TripletParams | None = None

    # --- query side only (not part of the index format) --------------------------------------
    #: Queries keep more peaks than the index: under noise (babble above all) the loudest
    #: peaks of a clip are often not the song's, and the song's own peaks rank lower.
    query_density_peaks: int = 30
    #: Queries pair each anchor with more targets, so that pairs the index formed among its
    #: sparser peaks are still among the query's despite the extra peaks in between.
    query_fan_out: int = 20
    #: The second tier's peaks (peaks.find_sustained_peaks): local maxima of +-frames x +-bins
    #: (half the index's neighbourhood), ranked by steadiness, then prominence. Measured on
    #: the development corpus, against the index's neighbourhood and prominence alone: babble
    #: at 0 dB 81.7 vs 76.4 % of 5-s clips and 95.1 vs 91.9 % of 10-s clips (BENCHMARKS.md).
    query_sustained_peak_frames: int = 4
    query_sustained_peak_bins: int = 6
    #: Frames either side of a peak in which its bin must still be a spectral maximum, within
    #: this many dB of the peak, to count as steady.
    query_steady_frames: int = 3
    query_steady_within_db: float = 6.0
    #: Prominence (dB) worth one steady frame in the ranking: steadiness leads, prominence
    #: breaks ties and lets a loud short note beat a faint held one.
    query_prominence_db_per_steady_frame: float = 5.0
    #: A clip the second tier leaves undecided is analysed again starting 1/n, 2/n, ...
    #: (n - 1)/n of a hop later, and each of those sustained peak sets is looked up as a
    #: variant of its own (core/identify/identify.py). At 0 dB of babble which local maxima
    #: win depends on where the frame grid falls, so each start is a fresh draw of the song's
    #: surviving peaks: on the development corpus (babble at 0 dB, 5-s clips) one of the four
    #: starts found the song for 220 of 246 clips, the clip's own start for 201. 1: no such
    #: analyses.
    query_hop_phases: int = 4

    @property
    def frame_s(self) -> float:
        """Seconds per STFT frame: the unit of every stored offset."""
        return self.hop / self.sample_rate_hz

    def hop_phase_shifts(self, phases: int | None = None) -> list[int]:
        """Samples by which the extra analyses of `phases` hop phases (a clip's:
        query_hop_phases) start later: k * hop / phases for k = 1 .. phases - 1."""
        phases = max(1, self.query_hop_phases if phases is None else phases)
        return [k * self.hop // phases for k in range(1, phases)]

    def for_queries(self) -> FingerprintParams:
        """The parameters a query is fingerprinted with (same hash layout, denser)."""
        return replace(self, density_peaks=self.query_density_peaks, fan_out=self.query_fan_out)

    @property
    def format(self) -> FingerprintFormat:
        return "fp1" if self.triplets is None else "fp2"

    @property
    def version(self) -> str:
        """The index format and a short stable digest of its fields ("fp1-..." or
        "fp2-..."); stored with the index."""
        fields = {k: v for k, v in asdict(self).items() if not k.startswith("query_")}
        triplets = fields.pop("triplets")
        if triplets is not None:
            fields["triplets"] = {k: v for k, v in triplets.items() if not k.startswith("query_")}
        # Fields added after the first index was built enter the digest only when they differ
        # from the value that reproduces the earlier behaviour, so existing indexes stay valid.
        for name, neutral in _ADDED_LATER.items():
            if fields[name] == neutral:
                del fields[name]
        blob = json.dumps(fields, sort_keys=True).encode()
        return f"{self.format}-" + hashlib.sha256(blob).hexdigest()[:12]


#: Index-format fields added later, with the value that means "as before the field existed".
_ADDED_LATER = {"density_bands": 1}

DEFAULT_PARAMS = FingerprintParams()


def params_for_format(fingerprint_format: FingerprintFormat) -> FingerprintParams:
    """The fingerprint parameters of an index format (the FINGERPRINT_FORMAT setting)."""
    if fingerprint_format == "fp1":
        return DEFAULT_PARAMS
    if fingerprint_format == "fp2":
        return replace(DEFAULT_PARAMS, triplets=TripletParams())
    raise ValueError(f"unknown fingerprint format {fingerprint_format!r}")

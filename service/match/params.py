"""Every tunable of the matcher, in one documented parameter object."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from service.audio.hashes import HASH_SPACE
from service.match.envelopes import EnvelopeCheckParams


@dataclass(frozen=True)
class MatchParams:
    #: Minimum confidence (1 - chance probability over the whole catalogue) to report a match.
    min_confidence: float = 0.99
    #: Aligned query frames below which nothing is reported whatever the statistics say: a
    #: handful of coincident hashes can look improbable under the independence model yet happen in
    #: music that repeats itself.
    min_score: int = 5
    #: The same floor for the candidates a search returns beside its matches, which the band
    #: envelopes are asked about when nothing beats chance (envelope_confirm.py). Under
    #: babble at 0 dB a 5-s clip's song can keep only four aligned frames in every hop phase
    #: yet stand 5-11 standard deviations out in its envelopes at their offset; such weak
    #: candidates pay EnvelopeCheckParams.calibration_log10_weak. Measured on the development
    #: corpus (BENCHMARKS.md): 4 against 5 answered 3 more of the 246 5-s babble clips, and
    #: the same 3 of 2,184 unindexed clips; 3 (without the weak candidates' charge) answered
    #: one clip fewer than 4 (chance candidates crowd the true one out of the few checked).
    candidate_min_score: int = 4
    #: Chance hits in music cluster more than independent draws would (repeated bars, shared
    #: instruments, drones). Measured on the development corpus's unindexed clips (votes
    #: counted per query frame), chance alignments reach about 10^2.25 times the probability
    #: the independence model gives them: the lowest calibration at which the quick benchmark
    #: answered at most one of its 210 10-s unindexed clips while white noise at 0 dB stayed
    #: above 97 % (BENCHMARKS.md). The model's probability is multiplied by
    #: 10^calibration_log10. Rescale it, rather than the confidence threshold, when
    #: re-calibrating on other music.
    calibration_log10: float = 2.25
    #: Added to calibration_log10 for a match found at a speed of the speed grid other than the
    #: clip's own. Every remaining false positive of the full benchmark came from the grid (4 of
    #: 728 10-s unindexed clips at 2.25 alone): chance alignments of a clip re-hashed at
    #: another speed reach improbable scores more often than the model says, beyond the
    #: Bonferroni factor the grid already pays. At 1.0 the full benchmark answered 3 of 728 10-s
    #: and none of 728 5-s unindexed clips (4 and 2 before); 5-s clips pitch-shifted by a
    #: semitone lost 2 points (85.8 -> 84.1 % down, 94.7 -> 92.7 % up), and every other speed,
    #: tempo and pitch cell at 5 and 10 s kept its score, within one clip.
    calibration_log10_speed: float = 1.0
    #: Added to calibration_log10 for a match found by an analysis of the clip started at
    #: another hop phase than its own (FingerprintParams.query_hop_phases), besides the
    #: Bonferroni factor of the phases tried: each is a fresh draw of chance alignments too.
    calibration_log10_phase: float = 1.0
    #: Expected chance votes per offset bin are multiplied by this (1: the plain model).
    dispersion: float = 1.0
    #: Aligned hashes separated from the rest by more than this (s) are left out of the span a
    #: match reports (query_start_s..query_end_s): one chance-aligned hash seconds before a song
    #: starts in a stream or a mix would otherwise move the reported start by as much.
    span_gap_s: float = 3.0
    #: Most matches returned, best first.
    max_matches: int = 5
    #: Hashes stored more than this many times the catalogue's mean per hash value are not
    #: looked up in the first tier. Hash frequencies are very uneven (sustained bass notes,
    #: drones, common intervals): on the development corpus the 44 % of a clip's hashes above
    #: this line bring 93 % of its hits, nearly all of them chance votes, and lookup and
    #: voting cost grow with the hits; the rest still decide a clean clip. A clip the first
    #: tier leaves inconclusive is looked up again under frequent_hash_factor_deep (400x: 1 %
    #: of its hashes, 19 % of its hits left out). 0 looks up everything.
    frequent_hash_factor: float = 10.0
    #: The same for the lookups of clips the first tier leaves inconclusive (denser landmarks,
    #: speed grid): noise (babble above all) leaves a clip with few of its song's landmarks,
    #: often low, frequent ones, so these look further down the frequency list.
    frequent_hash_factor_deep: float = 400.0
    #: The same for the speed grid's hashes (every candidate speed but the clip's own, whose
    #: hashes the second tier already looked up under the deep cap). The grid multiplies a
    #: clip's hashes by its 24 speeds, and a clip of nothing in the catalogue (talk, an
    #: advert, an unindexed song: most windows of a monitored stream) always reaches it, so
    #: under the deep cap its lookup and voting were most of the cost of every such query.
    #: Measured on the quick benchmark (caps at true multiples of the mean): 10x lost pitch
    #: shifts (+1 semitone, 10 s: 96.7 -> 81.3 %); 50x keeps them (95.9 %), with the same
    #: false positives as 400x (0.5 % of 10-s unindexed clips).
    frequent_hash_factor_speed: float = 50.0
    #: The cap never falls below this many postings (a small catalogue's mean is below one).
    frequent_hash_min: int = 20
    #: Most postings one lookup returns (a batch of windows: per 10 s of them, hits_budget):
    #: past this, the most frequent of the hashes under the cap are left out too, the rarest
    #: kept first. The caps are multiples of the catalogue's mean, so without a budget a
    #: clip's hits grow with the catalogue without bound (at 100,000 songs one speed-grid
    #: identification held 15 GB). Every tier past the first fetches under it (the triplets
    #: when their own budget leaves them undecided, the second tier, the other hop phases;
    #: the speed grid has max_hits_speed_grid), so it bounds what a clip of music the
    #: catalogue lacks, which climbs them all, costs in memory and time. What a budget
    #: leaves out still counts in the chance model (records.LeftOut), so that the rarest
    #: hashes alone do not make chance alignments look more improbable than all of them
    #: would, and the best candidates of an inconclusive search are completed with every
    #: posting they hold (complete_candidates), so that a noisy clip whose song the rarest
    #: hashes rank among the few best is found as with no budget. Under fp2 at 10,000 and
    #: 30,000 songs (BENCHMARKS.md, lookup budget) a million gave the answers of four
    #: million on every clip measured, in less time and a fraction of the memory; at
    #: 30,000 half a million and a quarter of a million left 3 of 20 5-s babble clips
    #: unanswered that a million answered. The MAX_HITS_PER_LOOKUP setting.
    max_hits_per_lookup: int = 1_000_000
    #: When the triplets, the second tier or the other hop phases are inconclusive and
    #: their budget left some of their hashes out, this many of their most improbable
    #: candidate songs are completed: the left-out postings they hold are fetched (a budget
    #: at a time, each part cut to those songs) and those songs alone are searched again
    #: (no other song's votes or chance change), each scored on every posting of the
    #: query's hashes, as with no budget. A noisy clip
    #: whose song the rarest hashes already rank among the few best is then found whatever
    #: the budget kept, and every other song costs no more than the budget. 0: no such step.
    complete_candidates: int = 8
    #: The budget of the first tier's lookup, per 10 s of clip. The caps are multiples of the
    #: catalogue's mean, so a clip's first-tier hits grow with the catalogue: ~96,000 at
    #: 10,000 songs and ~960,000 at 100,000, where looking them up and voting on them took
    #: 170 ms of a 291-ms p50 (BENCHMARKS.md). Under this budget the first tier keeps the
    #: clip's rarest hashes, which decide a clean clip at any size; a clip they leave
    #: inconclusive goes on to the second tier, which asks the hashes left out again under
    #: the deep cap and the full budget. So the budget trades only latency, never answers.
    max_hits_first_tier: int = 150_000
    #: The budget of the triplets' lookup (index format "fp2"), per 10 s of clip, the rarest
    #: hashes first, as max_hits_first_tier: a clip's triplets meet postings in proportion
    #: to the catalogue (some 20,000 at 123 songs, two million at 10,000), and every hit is
    #: voted under every coarse time scale. The rarest of them decide most clips played at
    #: another speed; a clip they leave inconclusive (music the catalogue lacks among them)
    #: asks the hashes left out again under max_hits_per_lookup, so this budget trades only
    #: latency, never answers (max_hits_per_lookup is the limit).
    max_hits_triplets: int = 150_000
    #: The budget of the speed grid's lookups ("fp1"), per 10 s of clip: its coarse search
    #: shares it among every speed of the grid, so it binds sooner than a single speed's
    #: lookup; at 30,000 songs a 5 %-slow clip that four million postings found went
    #: unanswered under a million (BENCHMARKS.md, lookup budget).
    max_hits_speed_grid: int = 4_000_000
    #: Candidate speeds searched when the clip does not match at its own speed: from
    #: 1 - speed_range to 1 + speed_range in steps of speed_step. A hash survives a residual
    #: speed error of about a quarter of a percent, so the step is half a percent.
    speed_range: float = 0.06
    speed_step: float = 0.005
    #: When the grid's coarse search (index-density landmarks at every speed, one budget
    #: shared by all) leaves the clip inconclusive, its query-density landmarks at and beside
    #: the grid speeds of this many most improbable candidates are looked up with the whole
    #: budget to themselves (service/core/identify/speed_search.py; 0: no such step). At 100,000
    #: songs a shared budget reaches only a clip's rarest hashes at each speed.
    speed_focus: int = 2
    #: Also search pitch-only variants of every grid speed (frequencies scaled, times not): a
    #: speed variant of a pitch-shifted clip gets its time differences wrong by as much, so
    #: only its short ones still match, and at 100,000 songs that was too few.
    pitch_search: bool = True
    #: Residual time scales searched (tempo without pitch change and vice versa), +- this.
    time_scale_range: float = 0.07
    #: Candidate songs whose alignment is refined for a residual time scale.
    refine_top: int = 8
    #: A match at the clip's own speed this improbable by chance (log10) is final; anything
    #: weaker is compared with the best match across the speed grid.
    accept_without_speed_search_log10: float = -10.0
    #: The same for a match that drifts along the clip by more than a step of the speed grid
    #: (a residual time scale at the clip's own speed): the clip may play at another speed,
    #: under which the right song scores far higher. On the development corpus a song built
    #: from the same samples as a 2 %-slow clip's aligned with it at 10^-10.3, drifting
    #: 1.3 %; clips stretched 5 % without a pitch change (the drift is their song's) reached
    #: 10^-20 in 98 % of 10-s, 85 % of 5-s and 46 % of 3-s cases, and skip the grid.
    accept_drifting_without_speed_search_log10: float = -20.0
    #: Time scales a query's triplets (index format "fp2") are voted under: from
    #: 1 - triplet_scale_range to 1 + triplet_scale_range in steps of triplet_scale_step.
    #: One lookup serves every scale (the hashes do not change with speed); a step moves the
    #: last anchor of a 10-s clip by about one and a half frames, which the +-1 frame window
    #: of the offset vote absorbs, and what is left is refined within +-triplet_scale_step.
    triplet_scale_range: float = 0.11
    triplet_scale_step: float = 0.005
    #: Step of the coarse grid of time scales a query's triplets are voted under first, with
    #: a band of offsets wide enough to hold any alignment the fine grid (triplet_scale_step,
    #: refined within a step) could find within half a coarse step: only the songs that could
    #: reach min_score there are voted under every scale of the fine grid, which loses no
    #: match of the fine grid alone and, for a clip of music the catalogue lacks, leaves few
    #: songs or none. 0: no coarse pass.
    triplet_coarse_scale_step: float = 0.02
    #: Step of a still coarser grid voted before that one, on the same principle, its band
    #: of offsets as wide as any alignment of the fine grid within half of this step: at a
    #: large catalogue a clip's triplets meet a million postings of thousands of songs, and
    #: three scales (0.925, 1 and 1.075: the fewest that hold every scale of the range
    #: within half a step) rule out nearly all of them, so the coarse grid votes only on the
    #: few left. The steps change no answer (a pass rules out only songs that could not
    #: align under any scale within half its step); at 10,000 songs this one voted the same
    #: hits in about three quarters of the time of a 0.06 step's five scales (BENCHMARKS.md,
    #: the triplets' grids of time scales). 0: no such pass.
    triplet_coarser_scale_step: float = 0.075
    #: How a clip no tier could decide is confirmed from band envelopes (None: it is not).
    envelope_check: EnvelopeCheckParams | None = field(default_factory=EnvelopeCheckParams)

    def max_postings(self, total_fingerprints: int, factor: float | None = None) -> int | None:
        """The most postings a hash may have and still be looked up, in a catalogue of
        `total_fingerprints` (None: no cap), at `factor` times the mean (default: the first
        tier's, frequent_hash_factor)."""
        if factor is None:
            factor = self.frequent_hash_factor
        if factor <= 0:
            return None
        mean = total_fingerprints / HASH_SPACE
        return max(self.frequent_hash_min, math.ceil(factor * mean))

    def triplet_scales(self) -> list[float]:
        """Every time scale a query's triplets are voted under, 1.0 first."""
        steps = round(self.triplet_scale_range / self.triplet_scale_step)
        others = [1.0 + k * self.triplet_scale_step for k in range(-steps, steps + 1) if k != 0]
        return [1.0, *sorted(others, key=lambda f: abs(f - 1.0))]

    def triplet_coarse_scales(self, step: float | None = None) -> list[float]:
        """The coarse grid (of `step`, default triplet_coarse_scale_step): every scale of
        triplet_scales() lies within half a step of one of these."""
        step = self.triplet_coarse_scale_step if step is None else step
        steps = math.ceil((self.triplet_scale_range - step / 2) / step - 1e-9)
        return [1.0 + k * step for k in range(-steps, steps + 1)]

    def speed_grid(self) -> list[float]:
        """Every candidate speed, 1.0 first."""
        steps = round(self.speed_range / self.speed_step)
        grid = [1.0 + k * self.speed_step for k in range(-steps, steps + 1) if k != 0]
        return [1.0, *sorted(grid, key=lambda f: abs(f - 1.0))]

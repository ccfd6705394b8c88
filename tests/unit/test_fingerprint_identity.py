"""Fingerprints must not change: the same samples give bit-identical peaks and hashes.

Every stored index holds hashes made by this pipeline under one parameter version; a faster
implementation that moved a single peak would silently stop old songs from matching. GOLDEN
holds values of files in the repository computed with the reference implementation (scipy's
maximum_filter, out-of-place dB) under the first index version's parameters (one density
limit over the whole band, index version fp1-6b908e58868a); GOLDEN_DEFAULT pins the default
parameters
(fp1-ae85947285a2, four density bands), so a change of the default is a deliberate act that
updates it. The running maximum used in place of maximum_filter is also checked against scipy
directly on awkward shapes and ties.

Peak positions and hashes are pinned bit for bit; prominences only to within rounding. numpy
dispatches float32 log10 by CPU (AVX-512 and AVX2 kernels differ in the last bit: up to 8e-6
dB here), so the dB values of one file differ in their last bits between machines while every
peak and hash stays the same (checked on both kernels with NPY_DISABLE_CPU_FEATURES). The
sums below were computed on the AVX2 kernel.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import maximum_filter

from service.audio.decode import decode_audio
from service.audio.hashes import landmark_hashes
from service.audio.params import DEFAULT_PARAMS, params_for_format
from service.audio.peaks import find_peaks
from service.audio.running import running_max
from service.audio.triplets import triplet_hashes

DATA = Path(__file__).resolve().parents[1] / "data"

#: file, parameters, peaks, sha256 of (frames, bins), sum of prominences (dB), fingerprints,
#: sha256 of (hashes, offsets)
GOLDEN = [
    (
        "decode/mp3_44k_stereo.mp3",
        "index",
        79,
        "bd890814ee884d745f6877da506818b056a5c2a21b1606f7bde704945d4ed013",
        3203.330,
        620,
        "f5a3535a1493d21bfd07e798394dfd8132c66d89fe0863493106eed68f2e781d",
    ),
    (
        "decode/mp3_44k_stereo.mp3",
        "query",
        80,
        "1de5d950ffbb1d07c801c34b386a92d814919034a7f49d5464c1ddb43424452f",
        3212.878,
        783,
        "82b9cfe0fcfe48d8d1173ed0e88bbeaa0658c5834b870bf872d6da298ef9e530",
    ),
    (
        "decode/opus_48k_stereo.opus",
        "index",
        96,
        "47dc2fd9af0d7283c289440642f41be43ed0dea89ac5e6ca2bf9d8daa7872d93",
        3474.959,
        799,
        "d4d95b80d6836f62eb8fc4c2a667d13da8790232661e04eee568ea3cc7f0cf1f",
    ),
    (
        "decode/opus_48k_stereo.opus",
        "query",
        100,
        "df13f52955a1c867c81e2dda8b45295d14758ff9cc027a0d8b86a946a78a9f6a",
        3504.324,
        1264,
        "276d82b115bad16f5666443f11535324d520df54619b5ded438c5d0911626229",
    ),
    (
        "decode/ts_video_48k_stereo.ts",
        "index",
        74,
        "56718f409c042308be2f57e08d55f857f75897cd3adcde6a799412c0f167940d",
        2522.408,
        574,
        "bd6c360b5fc7305c5e39c6be67a05db6e78b80e0f4321c9ce6d7d7eb37600238",
    ),
    (
        "decode/ts_video_48k_stereo.ts",
        "query",
        78,
        "a7f8e8a75e3701f870c1c6ac0026661313272c948f6d3a6db5da72275f5c12f3",
        2609.748,
        930,
        "e46c14566238b0bf0abca9815e407f5670107d61c7e120a36a82b385c9cd15c7",
    ),
    (
        "music/armygeddon.ogg",
        "index",
        592,
        "f166ea42caa6858f5732c4108fe4a2f1d41620dcd9575cf24c66f629aed2e632",
        8909.561,
        5739,
        "01b2b30ee96f968b1b1479e5ebce098ee98a00adec2837be9f421e39c94c5f2c",
    ),
    (
        "music/armygeddon.ogg",
        "query",
        820,
        "06c3a13b08458d73d4aab41643a94cca75aac39a23b15c3ec667fd53c14e39dd",
        11518.350,
        15224,
        "6f9fe4fb62800273bb9a68e90461ecfa77c7eea4cb59e238ce4c321b87b08816",
    ),
    (
        "music/coherence.ogg",
        "index",
        563,
        "8b94882cdde5f44b0f318afab5a6eb5f9f748f6756b3b33e1688059e2b7de1cd",
        13422.487,
        5445,
        "f5ce17c3b40cf95270d3078c3cd99ae3975533dfd62e7db6acd7b3d17aadf81d",
    ),
    (
        "music/coherence.ogg",
        "query",
        822,
        "0134fe72b11caa5ade738f6dd9158f3912b8e4a850b3a0830a0d3d14be47a3ab",
        17434.216,
        15333,
        "30daf328c0152822b1b708ccae78ea844c9f990757e580c7930a03601295d144",
    ),
    (
        "music/mutilated_mime.ogg",
        "index",
        586,
        "2dbb55a88cd81992a487658ccd08f38707a2c77e0a8d3e7e5ac51cc9d01ee2ee",
        9261.381,
        5692,
        "48f90020dfda117a17601d202863966cf19180173678949c0b76beb59e01af24",
    ),
    (
        "music/mutilated_mime.ogg",
        "query",
        820,
        "43850adebffd21e4f600e1b2034d0dbe1964b78298eed8fed6c15747f0020044",
        12037.208,
        15240,
        "9ff8a3c7053094dbe64575336ff0eb436d034f509de3e50f7236f258838c769b",
    ),
]


#: The same files under the default parameters (version DEFAULT_VERSION).
DEFAULT_VERSION = "fp1-ae85947285a2"
GOLDEN_DEFAULT = [
    (
        "decode/mp3_44k_stereo.mp3",
        "index",
        61,
        "08a02edf9fd372ce38ea6f650a8dc2a3684f269ca4c0dfd06a9942162975267d",
        2777.685,
        434,
        "af603a85300dccdfe6fe42c706efb0be39ceb652bc0d379d2ebbda278e2e280c",
    ),
    (
        "decode/mp3_44k_stereo.mp3",
        "query",
        77,
        "2322f366898e5b05453a1a6f4428bb82b787b298542b6f0ced6d1122a8609923",
        3144.550,
        725,
        "12c18b8331b9108e3a315d649f10b9d0864a9218f5b6daa0194b29759473572b",
    ),
    (
        "decode/ts_video_48k_stereo.ts",
        "index",
        51,
        "34e9082e1b2e9aaa34577df8e23e252035382ebfb1e657f9a4e46261703fc70f",
        1940.860,
        363,
        "f26ec8dc8e78ea8ca5202d5c3b0d340edd666541f926e13ee14fb12644660abf",
    ),
    (
        "decode/ts_video_48k_stereo.ts",
        "query",
        67,
        "6249ad02f0e778fb804e7cec17ead2e3897047d48a71672dfdbe78e26e045d35",
        2365.706,
        746,
        "07fb91c4432b18bde4e7e003813c5a51a4f7ea7504ff67ee47ddd69679f13ab0",
    ),
    (
        "music/armygeddon.ogg",
        "index",
        438,
        "b2f6e7e3f662fd06f95c1c59f4f8759f5c27c30425655c3aebf0375a77894de1",
        6753.121,
        3916,
        "8fb8a17ada0612a4b1fbe095d86cd9b54c4c6efaa36d17ba53e6f5113a4bbd61",
    ),
    (
        "music/armygeddon.ogg",
        "query",
        587,
        "4dcc85b34a3937c0669cf61fe19568f71e7f6b4ff1330d79ac90a12c2459bb88",
        8752.565,
        9403,
        "a4914188112b009a4c0ab069d15caacd5cab520180eaf39bc704ebf7fdf3de02",
    ),
]

#: How far each peak's prominence may move by rounding alone (dB): the FFT (scipy's pocketfft
#: since the goldens were computed with numpy's; 5e-5 dB per peak between them on these
#: files) and the log10 kernel round differently, and a peak or hash that moves fails above.
PROMINENCE_ROUNDING_DB = 1e-4

#: The parameters GOLDEN was computed with.
FIRST_FORMAT = replace(DEFAULT_PARAMS, density_bands=1)


def _check(params, name, n_peaks, peaks_sha256, prominence_sum, n_hashes, hashes_sha256):
    samples = decode_audio(DATA / name, params.sample_rate_hz).samples
    peaks = find_peaks(samples, params)
    fingerprints = landmark_hashes(peaks, params)
    assert len(peaks) == n_peaks
    blob = peaks.frames.tobytes() + peaks.bins.tobytes()
    assert hashlib.sha256(blob).hexdigest() == peaks_sha256
    assert float(np.sum(peaks.prominence_db, dtype=np.float64)) == pytest.approx(
        prominence_sum, abs=PROMINENCE_ROUNDING_DB * n_peaks
    )
    assert len(fingerprints) == n_hashes
    blob = fingerprints.hashes.tobytes() + fingerprints.offsets.tobytes()
    assert hashlib.sha256(blob).hexdigest() == hashes_sha256


@pytest.mark.parametrize(
    ("name", "kind", "n_peaks", "peaks_sha256", "prominence_sum", "n_hashes", "hashes_sha256"),
    GOLDEN,
)
def test_committed_files_give_their_golden_peaks_and_hashes(
    name, kind, n_peaks, peaks_sha256, prominence_sum, n_hashes, hashes_sha256
):
    assert FIRST_FORMAT.version == "fp1-6b908e58868a"
    params = FIRST_FORMAT if kind == "index" else FIRST_FORMAT.for_queries()
    _check(params, name, n_peaks, peaks_sha256, prominence_sum, n_hashes, hashes_sha256)


@pytest.mark.parametrize(
    ("name", "kind", "n_peaks", "peaks_sha256", "prominence_sum", "n_hashes", "hashes_sha256"),
    GOLDEN_DEFAULT,
)
def test_default_parameters_give_their_golden_peaks_and_hashes(
    name, kind, n_peaks, peaks_sha256, prominence_sum, n_hashes, hashes_sha256
):
    assert DEFAULT_PARAMS.version == DEFAULT_VERSION
    params = DEFAULT_PARAMS if kind == "index" else DEFAULT_PARAMS.for_queries()
    _check(params, name, n_peaks, peaks_sha256, prominence_sum, n_hashes, hashes_sha256)


#: The "fp2" index format's version, and per file the triplets its index peaks store: count
#: and sha256 of (hashes, offsets). The hash layout is code, not only parameters: a change of
#: it must change these and, with a TripletParams field or layout_revision, the version.
FP2_VERSION = "fp2-57476f6b809f"
GOLDEN_FP2_TRIPLETS = [
    (
        "music/armygeddon.ogg",
        1582,
        "a53b199ec8babc3613563dcbc764ab626404619c360f48bef1f5184e7052eee8",
    ),
    (
        "music/coherence.ogg",
        1444,
        "bd1ce0b45deb0f335005b110e2d7e35b5f5c1938f100dc48c815dac249f01850",
    ),
]


@pytest.mark.parametrize(("name", "n_triplets", "triplets_sha256"), GOLDEN_FP2_TRIPLETS)
def test_fp2_stores_its_golden_triplets(name, n_triplets, triplets_sha256):
    params = params_for_format("fp2")
    assert params.version == FP2_VERSION
    assert params.triplets is not None
    samples = decode_audio(DATA / name, params.sample_rate_hz).samples
    triplets = triplet_hashes(find_peaks(samples, params), params.triplets, params.min_bin)
    assert len(triplets) == n_triplets
    blob = triplets.hashes.tobytes() + triplets.offsets.tobytes()
    assert hashlib.sha256(blob).hexdigest() == triplets_sha256


@pytest.mark.parametrize(
    ("shape", "size"),
    [((2144, 468), (17, 25)), ((5, 3), (17, 25)), ((1, 1), (17, 25)), ((40, 30), (3, 5)),
     ((100, 468), (1, 25)), ((33, 64), (9, 1)), ((64, 64), (31, 33))],
)  # fmt: skip
def test_running_max_equals_scipy_maximum_filter(shape, size):
    rng = np.random.default_rng(sum(shape) + sum(size))
    x = rng.standard_normal(shape).astype(np.float32)
    x[::3] = x[0]  # ties and plateaus, as quantised spectra have
    x[:, ::4] = -200.0
    expected = maximum_filter(x, size=size, mode="nearest")
    got = running_max(x, size)
    assert got.dtype == expected.dtype
    assert got.flags.c_contiguous
    assert np.array_equal(got, expected)

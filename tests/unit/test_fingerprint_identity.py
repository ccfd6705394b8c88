"""Fingerprints must not change: the same samples give bit-identical peaks and hashes.

Every stored index holds hashes made by this pipeline under one parameter version; a faster
implementation that moved a single peak would silently stop old songs from matching. GOLDEN
holds values of committed files computed with the code of commit 40b946c (scipy's
maximum_filter, out-of-place dB) under the parameters of that time (one density limit over the
whole band, index version fp1-6b908e58868a); GOLDEN_DEFAULT pins today's default parameters
(fp1-ae85947285a2, four density bands), so a change of the default is a deliberate act that
updates it. The running maximum that replaced maximum_filter is also checked against scipy
directly on awkward shapes and ties.
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
from service.audio.params import DEFAULT_PARAMS
from service.audio.peaks import find_peaks
from service.audio.running import running_max

DATA = Path(__file__).resolve().parents[1] / "data"

#: file, parameters, peaks, sha256 of (frames, bins, prominence), fingerprints, sha256 of
#: (hashes, offsets)
GOLDEN = [
    (
        "decode/mp3_44k_stereo.mp3",
        "index",
        79,
        "1d07097a0f676fc5f85cb246753a430db08d6ff5b93884ca4f15ce8e8c849b27",
        620,
        "f5a3535a1493d21bfd07e798394dfd8132c66d89fe0863493106eed68f2e781d",
    ),
    (
        "decode/mp3_44k_stereo.mp3",
        "query",
        80,
        "e1187b9dfb9b385433cf00deef80374679a1c237e124bd99ed548585ac4c8f37",
        783,
        "82b9cfe0fcfe48d8d1173ed0e88bbeaa0658c5834b870bf872d6da298ef9e530",
    ),
    (
        "decode/opus_48k_stereo.opus",
        "index",
        96,
        "d08cb16e27ab197b0bce40cddd5c7b86ef613caf04624afe6054bb30c1746b57",
        799,
        "d4d95b80d6836f62eb8fc4c2a667d13da8790232661e04eee568ea3cc7f0cf1f",
    ),
    (
        "decode/opus_48k_stereo.opus",
        "query",
        100,
        "d0548b2335cfedc779c91e5b9e8f188682037349550b3e49ea83a088a6da533c",
        1264,
        "276d82b115bad16f5666443f11535324d520df54619b5ded438c5d0911626229",
    ),
    (
        "decode/ts_video_48k_stereo.ts",
        "index",
        74,
        "abcdb384dd0394958d89c0d91f5feac90f88f3e3114d547bdfb448afac62a12e",
        574,
        "bd6c360b5fc7305c5e39c6be67a05db6e78b80e0f4321c9ce6d7d7eb37600238",
    ),
    (
        "decode/ts_video_48k_stereo.ts",
        "query",
        78,
        "4fd107d9375e19d6e93ccc30c279a94ab6368dea209de8a8a728f6f983a9684f",
        930,
        "e46c14566238b0bf0abca9815e407f5670107d61c7e120a36a82b385c9cd15c7",
    ),
    (
        "music/armygeddon.ogg",
        "index",
        592,
        "40b50d3f57a7b4b166330ef6b81b2738f8018fdf2d274159aa56dedff600dc21",
        5739,
        "01b2b30ee96f968b1b1479e5ebce098ee98a00adec2837be9f421e39c94c5f2c",
    ),
    (
        "music/armygeddon.ogg",
        "query",
        820,
        "5249cb669ab3b695d7fc983e5ec23e3eb33317051a085c7f294f6a0c6f387a63",
        15224,
        "6f9fe4fb62800273bb9a68e90461ecfa77c7eea4cb59e238ce4c321b87b08816",
    ),
    (
        "music/coherence.ogg",
        "index",
        563,
        "9c1d926a74bb9cd1f66befa3e439d7f267b60700d1a24abcd7116f915fb8b79a",
        5445,
        "f5ce17c3b40cf95270d3078c3cd99ae3975533dfd62e7db6acd7b3d17aadf81d",
    ),
    (
        "music/coherence.ogg",
        "query",
        822,
        "3ddca3ae222a001e60aa18eac86cb7989d273c6d11beca8f2dd72aee1bf37cf1",
        15333,
        "30daf328c0152822b1b708ccae78ea844c9f990757e580c7930a03601295d144",
    ),
    (
        "music/mutilated_mime.ogg",
        "index",
        586,
        "32fca962b8944c699d35e639c0db60925a1864b308f9a115f456101e06f217d9",
        5692,
        "48f90020dfda117a17601d202863966cf19180173678949c0b76beb59e01af24",
    ),
    (
        "music/mutilated_mime.ogg",
        "query",
        820,
        "972c317aae1f400dd15d00f6c034ecbcfab1bcff45c2bf1085ffa4c9ed73429d",
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
        "10ec068b38ae0482a8776cc3059e92bb5b4681ac433f66c4991461a2f439f4d2",
        434,
        "af603a85300dccdfe6fe42c706efb0be39ceb652bc0d379d2ebbda278e2e280c",
    ),
    (
        "decode/mp3_44k_stereo.mp3",
        "query",
        77,
        "bb4ef60496f8852a5178af752a73fb11fe789cc333269f070313d5326b7a0d2c",
        725,
        "12c18b8331b9108e3a315d649f10b9d0864a9218f5b6daa0194b29759473572b",
    ),
    (
        "decode/ts_video_48k_stereo.ts",
        "index",
        51,
        "63ee4145d4e55555d8b2aa5e2626c4b7a05ed5c62ee9c915ae2a27a1cec43a34",
        363,
        "f26ec8dc8e78ea8ca5202d5c3b0d340edd666541f926e13ee14fb12644660abf",
    ),
    (
        "decode/ts_video_48k_stereo.ts",
        "query",
        67,
        "93cb5acaa40fb8d258f2fee9b11b268566cb0623b1a855a18bf2ec16ed334ee4",
        746,
        "07fb91c4432b18bde4e7e003813c5a51a4f7ea7504ff67ee47ddd69679f13ab0",
    ),
    (
        "music/armygeddon.ogg",
        "index",
        438,
        "0915b14316d7f6c9f081e9cfeb3c22e8255c941ff22d81d9fd10a11ed6d958d6",
        3916,
        "8fb8a17ada0612a4b1fbe095d86cd9b54c4c6efaa36d17ba53e6f5113a4bbd61",
    ),
    (
        "music/armygeddon.ogg",
        "query",
        587,
        "917ade976b445236f00dcdf6109dad4c2416a92a05294c8cada48d471f1f764d",
        9403,
        "a4914188112b009a4c0ab069d15caacd5cab520180eaf39bc704ebf7fdf3de02",
    ),
]

#: The parameters GOLDEN was computed with.
FIRST_FORMAT = replace(DEFAULT_PARAMS, density_bands=1)


def _check(params, name, n_peaks, peaks_sha256, n_hashes, hashes_sha256):
    samples = decode_audio(DATA / name, params.sample_rate_hz).samples
    peaks = find_peaks(samples, params)
    fingerprints = landmark_hashes(peaks, params)
    assert len(peaks) == n_peaks
    blob = peaks.frames.tobytes() + peaks.bins.tobytes() + peaks.prominence_db.tobytes()
    assert hashlib.sha256(blob).hexdigest() == peaks_sha256
    assert len(fingerprints) == n_hashes
    blob = fingerprints.hashes.tobytes() + fingerprints.offsets.tobytes()
    assert hashlib.sha256(blob).hexdigest() == hashes_sha256


@pytest.mark.parametrize(
    ("name", "kind", "n_peaks", "peaks_sha256", "n_hashes", "hashes_sha256"), GOLDEN
)
def test_committed_files_give_their_golden_peaks_and_hashes(
    name, kind, n_peaks, peaks_sha256, n_hashes, hashes_sha256
):
    assert FIRST_FORMAT.version == "fp1-6b908e58868a"
    params = FIRST_FORMAT if kind == "index" else FIRST_FORMAT.for_queries()
    _check(params, name, n_peaks, peaks_sha256, n_hashes, hashes_sha256)


@pytest.mark.parametrize(
    ("name", "kind", "n_peaks", "peaks_sha256", "n_hashes", "hashes_sha256"), GOLDEN_DEFAULT
)
def test_default_parameters_give_their_golden_peaks_and_hashes(
    name, kind, n_peaks, peaks_sha256, n_hashes, hashes_sha256
):
    assert DEFAULT_PARAMS.version == DEFAULT_VERSION
    params = DEFAULT_PARAMS if kind == "index" else DEFAULT_PARAMS.for_queries()
    _check(params, name, n_peaks, peaks_sha256, n_hashes, hashes_sha256)


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

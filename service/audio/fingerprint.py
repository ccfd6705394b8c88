"""Samples -> fingerprints: the whole landmark pipeline behind one call."""

from __future__ import annotations

import numpy as np

from service.audio.hashes import Fingerprints, landmark_hashes
from service.audio.params import DEFAULT_PARAMS, FingerprintParams
from service.audio.peaks import find_peaks


def fingerprint(samples: np.ndarray, params: FingerprintParams = DEFAULT_PARAMS) -> Fingerprints:
    """Landmark hashes of mono float32 `samples` at `params.sample_rate_hz`."""
    return landmark_hashes(find_peaks(samples, params), params)

"""Samples -> fingerprints: the whole landmark pipeline behind one call."""

from __future__ import annotations

import numpy as np

from service.audio.hashes import Fingerprints
from service.audio.params import FingerprintParams
from service.audio.peaks import find_peaks
from service.audio.triplets import index_fingerprints


def fingerprint(samples: np.ndarray, params: FingerprintParams) -> Fingerprints:
    """What the index stores for mono float32 `samples` at `params.sample_rate_hz`: landmark
    hashes, and triplet hashes too under the "fp2" format."""
    return index_fingerprints(find_peaks(samples, params), params)

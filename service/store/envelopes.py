"""How band envelopes (service/audio/envelopes.py) are stored: their int8 levels, frame-major,
one blob per song or segment, of which a ranged read returns whole frames."""

from __future__ import annotations

import numpy as np

from service.store.records import EnvelopeSlice


def envelope_blob(envelope: np.ndarray) -> bytes:
    """How an envelope is stored: its int8 levels, frame-major (envelope_slice reads them)."""
    return np.ascontiguousarray(envelope, dtype=np.int8).tobytes()


def envelope_slice(blob: bytes, bands: int, first: int) -> EnvelopeSlice:
    """Frames of a stored envelope from the bytes a ranged read returned."""
    values = np.frombuffer(blob, dtype=np.int8)
    usable = len(values) - len(values) % bands
    return EnvelopeSlice(first, values[:usable].reshape(-1, bands))

"""File suffixes treated as audio (or audio-bearing video) when a name is all there is to go by.

Bulk indexing walks folders and the worker triages bucket uploads by key; both skip anything
else. A file named explicitly is always tried: PyAV decodes far more than this list.
"""

from __future__ import annotations

AUDIO_SUFFIXES = frozenset(
    {
        ".mp3", ".m4a", ".mp4", ".aac", ".ts", ".ogg", ".oga", ".opus",
        ".flac", ".wav", ".aif", ".aiff", ".wma", ".mka", ".webm", ".mkv",
    }
)  # fmt: skip

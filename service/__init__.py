"""song-detection: identify music in audio files and live streams."""

__version__ = "0.1.0"

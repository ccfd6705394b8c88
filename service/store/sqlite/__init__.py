"""The SQLite catalogue store (see store.py); re-exports only."""

from service.store.sqlite.schema import split_statements
from service.store.sqlite.store import SqliteStore

__all__ = ["SqliteStore", "split_statements"]

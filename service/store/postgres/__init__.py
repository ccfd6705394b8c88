"""The PostgreSQL catalogue store (see store.py); re-exports only."""

from service.store.postgres.compaction import COMPACTION_LOCK_KEY
from service.store.postgres.copy_format import encode_fingerprint_copy
from service.store.postgres.lookup import LOOKUP_SQL, lookup_limits
from service.store.postgres.schema import MIGRATION_LOCK_KEY
from service.store.postgres.store import PostgresStore

__all__ = [
    "COMPACTION_LOCK_KEY",
    "LOOKUP_SQL",
    "MIGRATION_LOCK_KEY",
    "PostgresStore",
    "encode_fingerprint_copy",
    "lookup_limits",
]

"""Typed configuration, read once from the environment.

Every knob the service, the worker and the CLI share lives here so that one `DATABASE_URL`
(or one `.env` file) points all three at the same catalogue.
"""

from __future__ import annotations

import os
from functools import cached_property
from typing import Any, Literal
from urllib.parse import quote

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: File name of the embedded SQLite store inside the data directory.
SQLITE_FILE_NAME = "song-detection.sqlite3"


def default_data_dir() -> str:
    """Where the embedded store lives when nothing names a database: `DATA_DIR`, else the XDG
    data directory (`$XDG_DATA_HOME/song-detection`, by default
    `~/.local/share/song-detection`), so every command finds the same catalogue whatever the
    working directory."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return os.path.join(base, "song-detection")


def default_database_url(data_dir: str | None = None) -> str:
    """The embedded SQLite store's URL in `data_dir` (default: `default_data_dir()`)."""
    folder = os.path.abspath(data_dir or default_data_dir())
    return f"sqlite:///{os.path.join(folder, SQLITE_FILE_NAME)}"


#: The parts DB_HOST is composed with; each is meaningless, so refused, without it.
DB_PARTS = ("db_port", "db_name", "db_user", "db_password", "db_sslmode")
DB_NAMING = ("database_url", "db_host", *DB_PARTS)
#: A read replica is named the way the primary is: DATABASE_READ_URL, or DB_READ_HOST with
#: DB_HOST's parts (an Aurora reader endpoint shares the writer's port, name and login).
DB_READ_NAMING = ("database_read_url", "db_read_host")


class Settings(BaseSettings):
    """Service configuration; each field maps to the upper-case environment variable of its name."""

    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", frozen=True, populate_by_name=True
    )

    environment: Literal["development", "production", "test"] = Field(
        "development",
        description="`production` refuses unsafe values (no API key, SQLite store).",
    )
    database_url: str = Field(
        "",
        description="`postgresql://user:pass@host:port/db` or `sqlite:///path/to/file.sqlite3`; "
        "not together with DB_HOST. Unset: the SQLite file song-detection.sqlite3 in DATA_DIR.",
    )
    data_dir: str | None = Field(
        None,
        description="Folder of the embedded SQLite store when neither DATABASE_URL nor DB_HOST "
        "is set; default $XDG_DATA_HOME/song-detection (~/.local/share/song-detection).",
    )
    # The database is named one way or the other, never both (_compose_database_url):
    # DATABASE_URL, or DB_HOST with its parts (on ECS: host, port and name from the stack, user
    # and password as secrets from Secrets Manager), joined into DATABASE_URL.
    db_host: str | None = Field(
        None, description="PostgreSQL host; DATABASE_URL is then composed from the DB_* parts."
    )
    db_port: int = Field(5432, ge=1, le=65535, description="PostgreSQL port (with DB_HOST).")
    db_name: str = Field("songs", min_length=1, description="Database name (with DB_HOST).")
    db_user: str = Field("postgres", min_length=1, description="Database user (with DB_HOST).")
    db_password: SecretStr | None = Field(None, description="Database password (with DB_HOST).")
    db_sslmode: Literal["disable", "prefer", "require", "verify-ca", "verify-full"] | None = Field(
        None, description="libpq-style sslmode appended to the composed URL (with DB_HOST)."
    )
    database_read_url: str | None = Field(
        None,
        description="PostgreSQL read replica (`postgresql://...`, e.g. the Aurora reader "
        "endpoint) for fingerprint lookups and the other reads of identification; writes, "
        "migrations and the catalogue API stay on DATABASE_URL. Unset: everything on "
        "DATABASE_URL. Not together with DB_READ_HOST.",
    )
    db_read_host: str | None = Field(
        None,
        description="Read replica host (with DB_HOST); DATABASE_READ_URL is then composed from "
        "it and DB_HOST's parts (port, name, user, password, sslmode).",
    )
    db_pool_min_size: int = Field(2, ge=0, description="Connections kept open in the asyncpg pool.")
    db_pool_max_size: int = Field(10, ge=1, description="Upper bound of the asyncpg pool.")
    db_command_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Statement timeout of the long writes (a song's fingerprints); SQLite's "
        "wait for a locked database.",
    )
    db_stall_timeout_s: float = Field(
        5.0,
        gt=0,
        le=600,
        description="PostgreSQL: longest wait for a pooled connection, a new connection, "
        "/readyz's check and every ordinary statement; a database that stops answering "
        "turns into 503 this fast.",
    )
    compact_delta_rows: int = Field(
        1_000_000,
        ge=0,
        description=(
            "PostgreSQL: fingerprints added to the delta (about 1.5 h of audio per million)"
            " after which a background compaction folds them into the postings; 0: only"
            " `song-detection compact` and bulk `index` compact."
        ),
    )
    migrate_on_start: bool = Field(
        True, description="Apply pending migrations (under an advisory lock) when the app starts."
    )
    upload_max_bytes: int = Field(
        200 * 1024 * 1024, gt=0, description="Largest accepted upload; larger ones get HTTP 413."
    )
    max_index_audio_s: float = Field(
        7200.0,
        gt=0,
        le=149 * 3600,
        description="Most audio (s) a song may decode to (`POST /songs`, the worker, `index`);"
        " counted while decoding, so memory stays bounded whatever the file declares.",
    )
    max_identify_audio_s: float = Field(
        7200.0,
        gt=0,
        le=149 * 3600,
        description="Most audio (s) a file to identify may decode to (`POST /identify`, the"
        " worker's songs_to_check/ files).",
    )
    api_key: str | None = Field(
        None,
        description="When set, every endpoint except health checks requires `X-API-Key`.",
    )
    cpu_workers: int = Field(
        0,
        ge=0,
        description="Processes for decoding and fingerprinting; 0 means one per CPU core.",
    )
    cpu_queue_max: int = Field(
        4,
        ge=0,
        le=10_000,
        description="Uploads (POST /identify, POST /songs) and worker tasks that may wait for "
        "a busy CPU pool beyond one per process; more uploads get 503 with Retry-After before "
        "their body is read.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = Field(
        "text",
        description="`json`: one JSON object per line (the image's default, for CloudWatch); "
        "`text`: a readable line for a terminal.",
    )
    host: str = Field("127.0.0.1", description="Bind address of `song-detection serve`.")
    port: int = Field(8000, ge=1, le=65535, description="Port of `song-detection serve`.")
    min_confidence: float = Field(
        0.99,
        gt=0,
        lt=1,
        description="A match is reported only when chance would produce its score with "
        "probability below 1 - min_confidence across the whole catalogue.",
    )
    max_matches: int = Field(5, ge=1, le=100, description="Most matches returned per query.")
    fingerprint_format: Literal["fp1", "fp2"] = Field(
        "fp1",
        description="Index format of a NEW catalogue: `fp1` stores landmark pairs and finds "
        "songs played 2-6 % fast or slow with a grid of speeds; `fp2` also stores "
        "speed-invariant triplets and finds speed, tempo and pitch changes up to +-10 % with "
        "one lookup (docs/how-it-works.md). A catalogue keeps the format it was built with: "
        "the service refuses to open one of the other format (re-index to change it).",
    )
    max_hits_per_lookup: int = Field(
        1_000_000,
        ge=100_000,
        description="Most stored fingerprints one identification fetches and votes on in "
        "each tier past the first (fp1's speed grid has a budget of its own), the rarest "
        "hashes first: what bounds a request's memory "
        "and the time a clip of unknown music takes however large the catalogue grows. What "
        "it leaves out still counts as chance votes, and the few best candidates of an "
        "inconclusive search are completed with every posting they hold, so a smaller budget "
        "lets about no more chance alignments through and misses few songs; a larger one "
        "costs more time and memory in a catalogue of many thousands of songs "
        "(BENCHMARKS.md, lookup budget).",
    )
    envelope_check: bool = Field(
        True,
        description="Confirm the landmark candidates of a clip no landmark tier could decide "
        "from the songs' band envelopes (noisy clips; see README, How it works).",
    )

    # --- AWS: S3 uploads -> SQS -> worker -> S3 reports + SNS -------------------------------
    aws_region: str = Field(
        "us-east-1",
        validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION"),
        description="Region of the bucket, queue and topic.",
    )
    aws_endpoint_url: str | None = Field(
        None,
        description="Endpoint override for every AWS client (LocalStack, moto); unset on AWS.",
    )
    s3_bucket: str | None = Field(
        None, description="Bucket users upload to (songs_to_index/, songs_to_check/)."
    )
    sqs_queue_url: str | None = Field(
        None,
        description="Queue of the bucket's event notifications. When set, `serve` also runs "
        "the poller in-process unless RUN_WORKER_IN_API=false.",
    )
    sns_topic_arn: str | None = Field(None, description="Topic that receives result messages.")
    run_worker_in_api: bool = Field(
        True, description="Let `serve` run the SQS poller when SQS_QUEUE_URL is set."
    )
    sqs_wait_s: int = Field(20, ge=0, le=20, description="SQS long-poll wait.")
    sqs_batch_size: int = Field(10, ge=1, le=10, description="Messages per receive call.")
    sqs_visibility_timeout_s: int = Field(
        120,
        ge=10,
        le=43200,
        description="Visibility timeout the worker sets and keeps extending while it works.",
    )
    worker_concurrency: int = Field(
        4, ge=1, le=64, description="Messages processed at once by one worker."
    )
    worker_shutdown_grace_s: float = Field(
        25.0,
        gt=0,
        description="After SIGTERM, time to finish in-flight messages before releasing them "
        "(ECS allows 30 s).",
    )
    worker_health_port: int = Field(
        8001, ge=0, le=65535, description="Port of the standalone worker's /healthz (0: off)."
    )

    # --- live streams (MediaLive segments under songs_to_check/streams/) --------------------
    stream_segment_s: float = Field(
        12.0,
        gt=0,
        le=600,
        description="Nominal segment length (the archive output's rollover); places segments "
        "that carry no PTS.",
    )
    stream_play_end_timeout_s: float = Field(
        60.0,
        gt=0,
        description="A stream with no new segment for this long has its current play ended.",
    )
    stream_down_after_s: float = Field(
        120.0,
        ge=10,
        le=86400,
        description="A stream whose audio stops for this long (no segment covering it) is "
        "down: stream.down on SNS, a gap in GET /streams/{name}; stream.up when it returns.",
    )
    stream_announce_settle_s: float = Field(
        60.0,
        ge=0,
        le=3600,
        description="A play is announced (play.started) once the segments around it have all "
        "arrived; while one is missing, after this long in the log, the missing segment taken "
        "as lost. Likewise for play.ended (docs/streams.md, Events on SNS).",
    )
    stream_retention_s: float = Field(
        6 * 3600.0,
        ge=600,
        description="How long (stream time) segments' peaks and window matches are kept for "
        "recomputing the log; the log itself is kept for good.",
    )
    stream_speed_search: bool = Field(
        True,
        description="Search stream windows that match nothing at their own speed under the "
        "speed grid (songs played 2-6 % fast or slow). At 100,000 songs it costs seconds per "
        "window of unknown audio (talk, ads, music not in the catalogue): turn it off when the "
        "stations play songs at their own speed (BENCHMARKS.md, Live streams). An fp2 "
        "catalogue has no grid (its triplets search every speed in one lookup) and ignores it.",
    )
    stream_sweep_interval_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="How often the worker ends idle streams' plays, publishes pending play "
        "events and prunes old segment data.",
    )

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgres://", "sqlite://")):
            raise ValueError("DATABASE_URL must start with postgresql://, postgres:// or sqlite://")
        return value

    @field_validator("database_read_url")
    @classmethod
    def _postgres_scheme(cls, value: str | None) -> str | None:
        if value and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("DATABASE_READ_URL must start with postgresql:// or postgres://")
        return value

    @model_validator(mode="before")
    @classmethod
    def _compose_database_url(cls, data: Any) -> Any:
        """The database is named in exactly one of three ways:
        1. DATABASE_URL set (and DB_HOST unset): used as it is.
        2. DB_HOST set (and DATABASE_URL unset):
           postgresql://DB_USER:DB_PASSWORD@DB_HOST:DB_PORT/DB_NAME?sslmode=DB_SSLMODE, user
           and password percent-encoded; defaults postgres, no password, 5432, songs, and no
           sslmode.
        3. Neither: the embedded SQLite file song-detection.sqlite3 in DATA_DIR (default: the
           XDG data directory, see default_data_dir).
        DATABASE_URL together with DB_HOST, or any of DB_PORT, DB_NAME, DB_USER, DB_PASSWORD,
        DB_SSLMODE without DB_HOST, is a configuration error: start-up stops rather than guess.
        A read replica, optional, follows the same rule: DATABASE_READ_URL as it is, or
        DB_READ_HOST composed with DB_HOST's parts (so only with DB_HOST); never both.
        An empty variable counts as unset.
        """
        if not isinstance(data, dict):
            return data
        naming = (*DB_NAMING, *DB_READ_NAMING)
        data = {k: v for k, v in data.items() if not (k in naming and v == "")}
        url, host = data.get("database_url"), data.get("db_host")
        if data.get("database_read_url") and data.get("db_read_host"):
            raise ValueError(
                "DATABASE_READ_URL and DB_READ_HOST are both set: name the read replica one way"
            )
        if data.get("db_read_host") and not host:
            raise ValueError(
                "DB_READ_HOST set without DB_HOST: it takes DB_HOST's parts; set DB_HOST, or "
                "use DATABASE_READ_URL"
            )
        parts = [p for p in DB_PARTS if data.get(p) is not None]
        if url and host:
            raise ValueError(
                "DATABASE_URL and DB_HOST are both set: name the database one way "
                "(unset DATABASE_URL to use DB_HOST and its parts)"
            )
        if not host:
            if parts:
                names = ", ".join(p.upper() for p in parts)
                raise ValueError(f"{names} set without DB_HOST: set DB_HOST, or use DATABASE_URL")
            if not url:
                return {**data, "database_url": default_database_url(data.get("data_dir"))}
            return data

        composed = {"database_url": _postgres_url(data, host)}
        if data.get("db_read_host"):
            composed["database_read_url"] = _postgres_url(data, data["db_read_host"])
        return {**data, **composed}

    @model_validator(mode="after")
    def _safe_for_production(self) -> Settings:
        if self.environment == "production":
            if not self.api_key:
                raise ValueError("API_KEY must be set when ENVIRONMENT=production")
            if self.is_sqlite:
                raise ValueError(
                    "ENVIRONMENT=production needs PostgreSQL: set DATABASE_URL or DB_HOST"
                )
        if self.database_read_url and self.is_sqlite:
            raise ValueError(
                "DATABASE_READ_URL (or DB_READ_HOST) needs a PostgreSQL primary: set "
                "DATABASE_URL or DB_HOST"
            )
        if self.db_pool_min_size > self.db_pool_max_size:
            raise ValueError("DB_POOL_MIN_SIZE must not exceed DB_POOL_MAX_SIZE")
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite://")

    @cached_property
    def sqlite_path(self) -> str:
        """File path of the SQLite store (`sqlite:///rel/path` or `sqlite:////abs/path`)."""
        path = self.database_url.removeprefix("sqlite:///")
        return path or default_database_url(self.data_dir).removeprefix("sqlite:///")

    @property
    def effective_cpu_workers(self) -> int:
        return self.cpu_workers or max(1, os.cpu_count() or 1)


def _postgres_url(data: dict[str, Any], host: str) -> str:
    """postgresql://DB_USER:DB_PASSWORD@host:DB_PORT/DB_NAME?sslmode=DB_SSLMODE, user and
    password percent-encoded; defaults postgres, no password, 5432, songs, no sslmode."""

    def part(name: str, default: object = None) -> str | None:
        value = data.get(name, default)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        return None if value is None else str(value)

    auth = quote(part("db_user", "postgres") or "postgres", safe="")
    password = part("db_password")
    if password:
        auth += ":" + quote(password, safe="")
    url = (
        f"postgresql://{auth}@{host}:{part('db_port', 5432)}"
        f"/{quote(part('db_name', 'songs') or 'songs', safe='')}"
    )
    if sslmode := part("db_sslmode"):
        url += f"?sslmode={sslmode}"
    return url

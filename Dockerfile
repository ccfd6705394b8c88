# One image for every role: `serve` (HTTP API), `worker` (SQS poller) and `migrate`; the command
# picks the role, e.g. `docker run IMAGE worker`.
#
# BASE_IMAGE is an ARG so that a locally built stand-in (infra/docker/build-base-image.sh) can
# replace python:3.11-slim where no public registry is reachable. PyAV and soxr ship wheels with
# FFmpeg and libsoxr inside, and every other dependency has a manylinux wheel, so neither stage
# needs a compiler or apt packages.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
# How pip reaches the package index, passed through from the building host when it needs them
# (a private index, a proxy's CA bundle present in the base image); unset by default. Build
# ARGs live only in this stage: nothing of them reaches the final image.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_CERT
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install --upgrade pip
WORKDIR /src
# Dependencies first, from pyproject.toml alone: this layer stays cached while only the code
# changes.
COPY pyproject.toml ./
RUN python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && /opt/venv/bin/pip install --prefer-binary -r requirements.txt
COPY README.md ./
COPY service ./service
RUN /opt/venv/bin/pip install --no-deps . && /opt/venv/bin/song-detection --help >/dev/null

FROM ${BASE_IMAGE}
# HOST=0.0.0.0 so that `serve` is reachable from outside the container; every setting can be
# overridden at run time. The image names no database: DATABASE_URL, or DB_HOST with its parts
# (ECS), comes from the environment, and setting both is refused. With neither, the store is the
# embedded SQLite file song-detection.sqlite3 in DATA_DIR, /app/data (a volume), so
# `docker run -p 8000:8000 IMAGE` works on its own. LOG_FORMAT=json: one JSON object per log
# line, for CloudWatch (LOG_FORMAT=text for a terminal).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    WORKER_HEALTH_PORT=8001 \
    LOG_FORMAT=json \
    DATA_DIR=/app/data \
    MIGRATIONS_DIR=/app/migrations
RUN useradd --uid 10001 --user-group --home-dir /app --no-create-home --shell /usr/sbin/nologin app \
    && mkdir -p /app/data \
    && chown app:app /app/data
COPY --from=build /opt/venv /opt/venv
COPY migrations /app/migrations
WORKDIR /app
USER 10001:10001
VOLUME ["/app/data"]
EXPOSE 8000 8001
# Liveness of `serve` (PORT) and of `worker` (WORKER_HEALTH_PORT): whichever answers. A one-shot
# `migrate` exits before the first check. ECS and compose define their own checks as well.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, sys, urllib.request as u\nfor p in (os.environ.get('PORT', '8000'), os.environ.get('WORKER_HEALTH_PORT', '8001')):\n    try:\n        u.urlopen(f'http://127.0.0.1:{p}/healthz', timeout=2)\n        sys.exit(0)\n    except OSError:\n        pass\nsys.exit(1)"]
# uvicorn stops within 20 s of SIGTERM (cli.py) and the worker within WORKER_SHUTDOWN_GRACE_S
# (25 s): both inside the 30 s ECS and `docker stop` allow before SIGKILL.
STOPSIGNAL SIGTERM
ENTRYPOINT ["song-detection"]
CMD ["serve"]

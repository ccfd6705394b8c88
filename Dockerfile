# syntax=docker/dockerfile:1
# One image for every role: `serve` (HTTP API), `worker` (SQS poller) and `migrate`.
# BASE_IMAGE is an ARG so that a locally built stand-in can replace python:3.11-slim where no
# public registry is reachable.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
RUN /opt/venv/bin/pip install --upgrade pip && /opt/venv/bin/pip install .

FROM ${BASE_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    MIGRATIONS_DIR=/app/migrations \
    DATABASE_URL=sqlite:////data/song-detection.sqlite3
RUN useradd --system --uid 10001 --home-dir /app app && mkdir -p /data /app && chown app /data
COPY --from=build /opt/venv /opt/venv
COPY migrations /app/migrations
WORKDIR /app
USER app
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\", \"8000\")}/healthz', timeout=2)"]
ENTRYPOINT ["song-detection"]
CMD ["serve"]

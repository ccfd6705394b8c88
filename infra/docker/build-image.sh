#!/usr/bin/env bash
# Build the service image on a host that reaches no public image registry: makes sure the
# stand-in base exists (build-base-image.sh), then `docker build --network host` with it as
# BASE_IMAGE, passing through how this host's pip reaches the package index (PIP_INDEX_URL,
# PIP_EXTRA_INDEX_URL when they are http(s) URLs, PIP_CERT when it is set; the base image
# carries this host's CA bundle at the same path).
#
#   infra/docker/build-image.sh [TAG] [extra docker build args...]   (TAG: song-detection:local)
#   BUILD_CONTEXT=infra/docker/standin infra/docker/build-image.sh TAG   (another image, the same way)
# Where Docker Hub is reachable, plain `docker build -t song-detection .` does the same.
set -euo pipefail
cd "$(dirname "$0")/../.."

tag=${1:-song-detection:local}
shift || true
# The folder to build, relative to the repository root: the service by default.
context=${BUILD_CONTEXT:-.}
# BASE_IMAGE=python:3.11-slim (or any other) skips the stand-in where a registry is reachable.
base=${BASE_IMAGE:-$(infra/docker/build-base-image.sh)}

args=(--network host --build-arg "BASE_IMAGE=$base" -t "$tag")
for var in PIP_INDEX_URL PIP_EXTRA_INDEX_URL; do
    value=${!var:-}
    # Local file:// indexes of the host do not exist inside the build.
    if [[ $value == http://* || $value == https://* ]]; then
        args+=(--build-arg "$var=$value")
    fi
done
cert=${PIP_CERT:-$(pip config get global.cert 2>/dev/null || true)}
if [ -n "$cert" ]; then
    args+=(--build-arg "PIP_CERT=$cert")
fi
# Debian's docker.io has no buildx plugin: use the classic builder then (BuildKit would also
# try to fetch its Dockerfile frontend from Docker Hub).
if [ -z "${DOCKER_BUILDKIT:-}" ] && ! docker buildx version >/dev/null 2>&1; then
    export DOCKER_BUILDKIT=0
fi
docker build "${args[@]}" "$@" "$context"

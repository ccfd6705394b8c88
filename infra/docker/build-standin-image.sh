#!/usr/bin/env bash
# Build the compose stand-in image (infra/docker/standin/: PostgreSQL 15 and moto's server in
# LocalStack's place) for machines that reach no image registry, on the debootstrap python base
# (build-base-image.sh). The tag carries a hash of the stand-in's files, so a change rebuilds
# it; the image is saved under $BASE_CACHE_DIR and loaded from there when a wiped engine lacks
# it. Also tagged song-detection/standin:local, the name compose.standins.yml uses.
#
#   infra/docker/build-standin-image.sh     # prints the tag
set -euo pipefail
cd "$(dirname "$0")"

CACHE_DIR=${BASE_CACHE_DIR:-/var/cache/song-detection}
hash=$(cat standin/Dockerfile standin/entrypoint.sh standin/localstack.py | sha256sum | cut -c1-12)
tag=song-detection/standin:$hash
tarball=$CACHE_DIR/standin-$hash.tar

log() { echo "build-standin-image: $*" >&2; }

if ! docker image inspect "$tag" >/dev/null 2>&1; then
    if [ -s "$tarball" ]; then
        log "loading $tarball"
        docker load -i "$tarball" >/dev/null
    else
        log "building $tag"
        # The same base, pip pass-through and builder choice as the service image.
        BUILD_CONTEXT=infra/docker/standin ./build-image.sh "$tag" >&2
        mkdir -p "$CACHE_DIR"
        rm -f "$CACHE_DIR"/standin-*.tar
        docker save -o "$tarball.tmp" "$tag" && mv "$tarball.tmp" "$tarball"
    fi
fi
docker tag "$tag" song-detection/standin:local
# Earlier versions of the stand-in are of no further use.
docker image ls song-detection/standin --format '{{.Repository}}:{{.Tag}}' \
    | grep -v -e ":$hash\$" -e ':local$' | xargs -r docker rmi >/dev/null 2>&1 || true
echo "$tag"

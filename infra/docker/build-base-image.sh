#!/usr/bin/env bash
# Build a local stand-in for python:3.11-slim where no public image registry is reachable:
# Debian bookworm (minbase) from the Debian mirror with python3 (3.11, like the real image),
# python3-venv, useradd and this host's CA bundle, so that pip inside `docker build` reaches the
# package index the way the host does. The image is imported under $BASE_TAG; the root file
# system tarball is cached so that a wiped engine re-imports it in seconds.
#
#   infra/docker/build-base-image.sh            # prints the tag; does nothing if it exists
#   FORCE=1 infra/docker/build-base-image.sh    # rebuild from the mirror
set -euo pipefail

BASE_TAG=${BASE_TAG:-song-detection/python-base:3.11-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE_DIR=${BASE_CACHE_DIR:-/var/cache/song-detection}
TARBALL="$CACHE_DIR/python-base-bookworm.tar"
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

log() { echo "build-base-image: $*" >&2; }

if [ "${FORCE:-0}" != 1 ] && docker image inspect "$BASE_TAG" >/dev/null 2>&1; then
    echo "$BASE_TAG"
    exit 0
fi

if [ "${FORCE:-0}" = 1 ] || [ ! -s "$TARBALL" ]; then
    command -v debootstrap >/dev/null || { log "debootstrap is not installed"; exit 1; }
    mkdir -p "$CACHE_DIR"
    rootfs=$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")
    trap 'rm -rf "$rootfs"' EXIT
    log "debootstrap bookworm from $MIRROR into $rootfs"
    debootstrap --variant=minbase \
        --include=python3,python3-venv,ca-certificates,passwd \
        bookworm "$rootfs" "$MIRROR" >"$CACHE_DIR/debootstrap.log" 2>&1 \
        || { tail -n 30 "$CACHE_DIR/debootstrap.log" >&2; exit 1; }
    # The host's trust store (it may hold a proxy's CA that the package index is reached
    # through); the same path as the host, so PIP_CERT can be passed through unchanged.
    if [ -d /usr/local/share/ca-certificates ]; then
        cp -a /usr/local/share/ca-certificates/. "$rootfs/usr/local/share/ca-certificates/"
    fi
    if [ -s "$CA_BUNDLE" ]; then
        cp "$CA_BUNDLE" "$rootfs/etc/ssl/certs/ca-certificates.crt"
    fi
    # Like the official slim images: no apt lists, docs or caches.
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
        "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/usr/share/doc/* \
        "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
    # `python` as well as `python3`, as in python:3.11-slim.
    ln -sf python3 "$rootfs/usr/bin/python"
    tar -C "$rootfs" --numeric-owner -cf "$TARBALL.tmp" .
    mv "$TARBALL.tmp" "$TARBALL"
fi

log "importing $TARBALL as $BASE_TAG"
docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' \
    "$TARBALL" "$BASE_TAG" >/dev/null
echo "$BASE_TAG"

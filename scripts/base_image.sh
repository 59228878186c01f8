#!/usr/bin/env bash
# Builds the base image the exported Dockerfile starts from, with no registry: a minimal
# Debian bookworm with python3, venv and pip, made by debootstrap and `docker import`.
#   scripts/base_image.sh [TAG]        default TAG: nborch-base:bookworm
# Needs root, debootstrap and a Debian mirror (NBORCH_DEBIAN_MIRROR, default deb.debian.org).
# Does nothing when the image exists already (NBORCH_REBUILD_BASE=1 rebuilds it).
set -euo pipefail
tag=${1:-nborch-base:bookworm}
mirror=${NBORCH_DEBIAN_MIRROR:-http://deb.debian.org/debian}
if [ "${NBORCH_REBUILD_BASE:-0}" != 1 ] && docker image inspect "$tag" > /dev/null 2>&1; then
    echo "base image $tag exists"
    exit 0
fi
root=$(mktemp -d /tmp/nborch-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
start=$(date +%s)
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip bookworm "$root" "$mirror"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' - "$tag"
echo "base image $tag built in $(( $(date +%s) - start )) s"

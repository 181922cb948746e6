#!/usr/bin/env bash
# Builds the base images paas and its tests need, locally, because this kind of host has no
# container registry: `debian:bookworm-slim` from a debootstrap'd root file system.
# Idempotent: does nothing when the image already exists.
set -euo pipefail

MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
TAG="debian:bookworm-slim"

if docker image inspect "$TAG" >/dev/null 2>&1; then
  echo "base-images: $TAG present"
  exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "base-images: debootstrap bookworm into $work (takes a few minutes)"
debootstrap --variant=minbase bookworm "$work/rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 || {
  tail -n 30 "$work/debootstrap.log" >&2
  exit 1
}
# Trim what a slim image does not carry, keep apt usable for image builds.
rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
tar -C "$work/rootfs" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["bash"]' - "$TAG" >/dev/null
echo "base-images: built $TAG"

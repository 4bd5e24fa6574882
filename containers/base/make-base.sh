#!/usr/bin/env bash
# Makes the local Debian base image (no registry is reachable here): debootstrap a minimal bookworm and
# `docker import` it. About 80 s. Usage: containers/base/make-base.sh [IMAGE] (default dart-debian:bookworm).
# Idempotent: does nothing when the image already exists. Needs root, debootstrap and a running engine.
set -euo pipefail
image="${1:-dart-debian:bookworm}"
suite="${DART_BASE_SUITE:-bookworm}"

if docker image inspect "$image" >/dev/null 2>&1; then
  echo "base image $image already present"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "make-base: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }

# The mirror this machine's apt already uses (deb822 URIs: or one-line deb entries), so no host name lives here.
mirror="$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)"
if [ -z "$mirror" ]; then
  mirror="$(grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | grep -v security | awk '{print $2}' | head -n1 || true)"
fi
[ -n "$mirror" ] || { echo "make-base: no apt mirror found in /etc/apt/sources*" >&2; exit 1; }

rootfs="$(mktemp -d /tmp/dart-base.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >/tmp/dart-base-debootstrap.log 2>&1 ||
  { echo "make-base: debootstrap failed, see /tmp/dart-base-debootstrap.log" >&2; exit 1; }
# Keep the image small and its apt pointed at the same mirror.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' - "$image" >/dev/null
echo "base image $image made from $suite ($(docker image inspect -f '{{.Size}}' "$image") bytes)"

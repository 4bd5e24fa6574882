#!/usr/bin/env bash
# Builds the vLLM CPU image: containers/vllm-cpu/build.sh [TAG] (default dart-vllm-cpu:0.32.0).
# BASE_IMAGE (default dart-debian:bookworm, made by containers/base/make-base.sh) may be any Debian/Ubuntu base.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tag="${1:-dart-vllm-cpu:0.32.0}"
base="${BASE_IMAGE:-dart-debian:bookworm}"
[ -f "$here/requirements.lock" ] || { echo "vllm-cpu build: $here/requirements.lock is missing" >&2; exit 1; }
ctx="$(mktemp -d /tmp/dart-vllm-cpu-ctx.XXXXXX)"
trap 'rm -rf "$ctx"' EXIT
mkdir "$ctx/ca-certificates"
cp "$here/Dockerfile" "$here/requirements.lock" "$ctx/"
cp /usr/local/share/ca-certificates/*.crt "$ctx/ca-certificates/" 2>/dev/null || true
docker build --network host --build-arg BASE_IMAGE="$base" -t "$tag" "$ctx"

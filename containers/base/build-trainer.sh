#!/usr/bin/env bash
# Builds the trainer sidecar image from containers/trainer/Dockerfile.
#   containers/base/build-trainer.sh                          GPU image dart-trainer:0.1.0 on python:3.11-slim-bookworm
#   containers/base/build-trainer.sh cpu                      CPU image dart-trainer-cpu:0.1.0 on dart-debian:bookworm
#   containers/base/build-trainer.sh TAG BASE_IMAGE [EXTRA_PIP]
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
if [ "${1:-}" = "cpu" ]; then
  tag="dart-trainer-cpu:0.1.0"; base="dart-debian:bookworm"; extra=""
else
  tag="${1:-dart-trainer:0.1.0}"; base="${2:-python:3.11-slim-bookworm}"; extra="${3-bitsandbytes==0.50.2}"
fi
ctx="$(mktemp -d /tmp/dart-trainer-ctx.XXXXXX)"
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/containers/trainer" "$ctx/ca-certificates"
cp -r "$repo/proto" "$ctx/proto"
cp "$repo/containers/trainer/Dockerfile" "$repo/containers/trainer/requirements.lock" "$ctx/containers/trainer/"
cp -r "$repo/containers/trainer/dart_trainer" "$ctx/containers/trainer/dart_trainer"
find "$ctx" -name __pycache__ -prune -exec rm -rf {} +
cp /usr/local/share/ca-certificates/*.crt "$ctx/ca-certificates/" 2>/dev/null || true
docker build --network host -f "$ctx/containers/trainer/Dockerfile" --build-arg BASE_IMAGE="$base" --build-arg EXTRA_PIP="$extra" -t "$tag" "$ctx"

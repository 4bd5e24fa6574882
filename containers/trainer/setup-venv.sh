#!/usr/bin/env bash
# containers/trainer/.venv: the trainer's locked dependencies (CPU or GPU: the same torch wheels), in the
# machine's shared environment cache (containers/venv.sh).
set -euo pipefail
cd "$(dirname "$0")"
python3.11 -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 is required, found {sys.version}"'
source ../venv.sh
install_env() {
  echo "trainer venv: installing the locked requirements (about 6 GB, a few minutes) in $1"
  "$1/bin/pip" install -q --upgrade pip
  "$1/bin/pip" install -q -r requirements.lock
}
ensure_venv trainer "$(cat requirements.lock)" install_env
.venv/bin/python -c "import torch, transformers, peft, trl, grpc; print('trainer venv ok: torch', torch.__version__, 'trl', trl.__version__)"

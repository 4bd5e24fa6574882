#!/usr/bin/env bash
# Creates containers/trainer/.venv with the locked dependencies (CPU or GPU: the same torch wheels).
set -euo pipefail
cd "$(dirname "$0")"
python3 -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 is required, found {sys.version}"'
if [ ! -x .venv/bin/python ] || ! cmp -s requirements.lock .venv/requirements.lock; then
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements.lock
  cp requirements.lock .venv/requirements.lock
fi
.venv/bin/python -c "import torch, transformers, peft, trl, grpc; print('trainer venv ok: torch', torch.__version__, 'trl', trl.__version__)"

#!/usr/bin/env bash
# containers/mlflow/.venv: the MLflow tracking server the tracking tests start on loopback (docs/tracking.md), from
# containers/mlflow/requirements.lock, in the machine's shared environment cache (containers/venv.sh). Idempotent:
# a second run with the same lock only checks the environment.
set -euo pipefail
cd "$(dirname "$0")/../containers/mlflow"
python3.11 -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 is required, found {sys.version}"'
source ../venv.sh
install_env() {
  echo "mlflow venv: installing the locked requirements (about 390 MB, about a minute) in $1"
  "$1/bin/pip" install -q --upgrade pip
  # The lock is complete and trimmed on purpose (see its header): no resolver, no extra downloads.
  "$1/bin/pip" install -q --no-deps -r requirements.lock
}
ensure_venv mlflow "$(cat requirements.lock)" install_env
.venv/bin/python -c "import mlflow.server, sqlalchemy, alembic; print('mlflow venv ok: mlflow', mlflow.__version__)"

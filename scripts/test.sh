#!/usr/bin/env bash
# Install what the tests need and run them: bash scripts/test.sh [pytest args]
# The tests start their own redis-server (from the binary), moto S3 server, workers and API.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_setup.sh

ensure_venv
ensure_redis_server
ensure_chromium
ensure_web
export SJC_REQUIRE_BROWSER=1
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
log "running the tests"
exec "$PY" -m pytest -q "$@"

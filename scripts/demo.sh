#!/usr/bin/env bash
# One command from a fresh checkout to a 3D asset:
#
#   bash scripts/demo.sh "a red cube" [extra `sjc submit` options, e.g. --steps 500 --seed 1]
#
# Installs what is missing (.venv with torch 2.13.0 and this package, redis-server), starts Redis,
# the API and one Celery worker in the background with the local-folder object store (.sjc/store)
# and a fresh demo API key, submits the prompt with the embedded model, follows its progress,
# downloads the results to out/<prompt>/ and stops everything it started.
# SJC_DEMO_KEEP=1 leaves the services running after the job until Ctrl-C (to try the API by hand).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_setup.sh

PROMPT="${1:-a red cube}"
shift $(( $# > 0 ? 1 : 0 ))
EXTRA=("$@")

ensure_venv
ensure_redis_server

STATE=.sjc/demo
mkdir -p "$STATE/logs" "$STATE/redis" .sjc/store
PIDS=()

stop_all() {
    local i pid n
    for (( i=${#PIDS[@]}-1; i>=0; i-- )); do
        pid="${PIDS[$i]}"
        kill -TERM "$pid" 2>/dev/null || continue
        for (( n=0; n<100; n++ )); do  # up to 10 s for a graceful stop
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL -- "-$pid" 2>/dev/null || true  # its process group: pool children included
    done
    if (( ${#PIDS[@]} )); then log "stopped the demo services (logs in $STATE/logs)"; fi
}
trap stop_all EXIT
trap 'exit 130' INT TERM

port_free() {
    "$PY" -c 'import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)' "$1"
}
pick_port() {  # the default port when free, else any free one
    if port_free "$1"; then echo "$1"; else
        "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
    fi
}
start() {  # start NAME CMD...: in its own process group, output to $STATE/logs/NAME.log
    local name="$1"; shift
    setsid "$@" >"$STATE/logs/$name.log" 2>&1 &
    PIDS+=("$!")
}
wait_until() {  # wait_until WHAT SECONDS CMD...: until CMD succeeds, while every service lives
    local what="$1" seconds="$2" i pid; shift 2
    for (( i=0; i<seconds*5; i++ )); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        for pid in "${PIDS[@]}"; do
            if ! kill -0 "$pid" 2>/dev/null; then
                echo "error: a demo service exited while waiting for $what; last log lines:" >&2
                tail -n 20 "$STATE"/logs/*.log >&2
                return 1
            fi
        done
        sleep 0.2
    done
    echo "error: $what not ready after $seconds s; logs in $STATE/logs" >&2
    return 1
}

REDIS_PORT="$(pick_port 6379)"
API_PORT="$(pick_port 8000)"
SERVER="http://127.0.0.1:$API_PORT"
API_KEY="demo-$("$PY" -c 'import secrets; print(secrets.token_urlsafe(18))')"

export SJC_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
export SJC_STORE=local
export SJC_LOCAL_STORE_DIR="$PWD/.sjc/store"
export SJC_PUBLIC_BASE_URL="$SERVER"
export SJC_API_KEYS="demo:$API_KEY"
export SJC_SIGNING_SECRET="$("$PY" -c 'import secrets; print(secrets.token_hex(32))')"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"

log "starting redis-server on port $REDIS_PORT (data in $STATE/redis)"
start redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$PWD/$STATE/redis" --save "" --appendonly no
wait_until "Redis" 20 "$PY" -c "import redis; redis.Redis.from_url('$SJC_REDIS_URL').ping()"

log "starting the API on $SERVER and one worker"
start api "$PY" -m uvicorn api.main:app --host 127.0.0.1 --port "$API_PORT"
start worker "$PY" -m celery -A worker.celery_app worker -Q "${SJC_QUEUE_NAME:-gpu}" -c 1 --loglevel INFO
wait_until "the API ($SERVER/readyz)" 120 "$PY" -c "import httpx; httpx.get('$SERVER/readyz', timeout=2).raise_for_status()"

NAME="$(echo "$PROMPT" | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-' | sed 's/^-*//; s/-*$//')"
OUT="out/${NAME:-job}"
log "web page: $SERVER/ (API key: $API_KEY; SJC_DEMO_KEEP=1 keeps it up after the job)"
log "submitting \"$PROMPT\" (results to $OUT/)"
status=0
"$VENV/bin/sjc" submit "$PROMPT" --wait --out "$OUT" --server "$SERVER" --api-key "$API_KEY" \
    --cancel-on-interrupt ${EXTRA[@]+"${EXTRA[@]}"} || status=$?
if [ "$status" -eq 0 ]; then
    log "done: the files are in $PWD/$OUT (open turntable.mp4; mesh.glb in any glTF viewer)"
fi

if [ "${SJC_DEMO_KEEP:-0}" = "1" ]; then
    log "services still running until Ctrl-C; open $SERVER/ in a browser (API key $API_KEY), or try:"
    echo "  export SJC_SERVER=$SERVER SJC_API_KEY=$API_KEY"
    echo "  curl -s -H \"Authorization: Bearer \$SJC_API_KEY\" \$SJC_SERVER/v1/jobs"
    while true; do sleep 3600; done
fi
exit "$status"

# Shared set-up of scripts/demo.sh and scripts/test.sh (sourced, not run).
#
# ensure_venv          .venv with torch==2.13.0 and this package installed editable with its dev extras,
#                      at the versions pinned in constraints.txt (tested together)
#                      (skipped when already done for the current pyproject.toml)
# ensure_redis_server  redis-server from Debian's packages when it is not on PATH
#
# Environment: PYTHON (interpreter for the venv, default python3.11), SJC_VENV (default .venv),
# SJC_TORCH_INDEX_URL (pip --index-url for torch, e.g. https://download.pytorch.org/whl/cu128).

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.11 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "error: Python 3.11 or newer is needed (set PYTHON=/path/to/python3.11)" >&2
    return 1
}

ensure_venv() {
    VENV="${SJC_VENV:-.venv}"
    if [ ! -x "$VENV/bin/python" ]; then
        local base
        base="$(find_python)"
        log "creating $VENV with $base"
        "$base" -m venv "$VENV"
    fi
    PY="$VENV/bin/python"
    if ! "$PY" -c 'import sys, importlib.metadata as m; sys.exit(m.version("torch").split("+")[0] != "2.13.0")' 2>/dev/null; then
        log "installing torch==2.13.0"
        "$PY" -m pip install ${SJC_TORCH_INDEX_URL:+--index-url "$SJC_TORCH_INDEX_URL"} torch==2.13.0
    fi
    local stamp="$VENV/.sjc-install-stamp" want
    want="$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16) $(pwd)"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] ||
        ! "$PY" -c 'import importlib.metadata as m; m.version("sjc")' >/dev/null 2>&1; then
        log "installing this package: pip install -e '.[dev]'"
        "$PY" -m pip install -c constraints.txt -e '.[dev]'
        echo "$want" >"$stamp"
    fi
}

ensure_redis_server() {
    if command -v redis-server >/dev/null 2>&1; then
        return 0
    fi
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        sudo="sudo"
    fi
    log "installing redis-server from Debian's packages"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server
}

apt_install() {
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        sudo="sudo"
    fi
    log "installing $* from Debian's packages"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" ||
        { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@"; }
}

# ensure_chromium      Debian's chromium for the browser tests (Playwright drives it; it downloads no browser)
ensure_chromium() {
    command -v chromium >/dev/null 2>&1 || apt_install chromium
}

# ensure_web           web/node_modules from web/package-lock.json (three.js, esbuild, gltf-validator)
ensure_web() {
    local stamp="web/node_modules/.sjc-lock-stamp" want
    want="$(sha256sum web/package-lock.json | cut -c1-16)"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        command -v npm >/dev/null 2>&1 || apt_install nodejs npm
        log "installing web/node_modules (npm ci)"
        (cd web && npm ci --no-audit --no-fund)
        echo "$want" >"$stamp"
    fi
}

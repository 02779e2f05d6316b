#!/usr/bin/env bash
# Developer entry points; the README's quick start uses these two:
#   ./dev.sh demo   run the daemon with the built-in demo camera on http://127.0.0.1:5000
#   ./dev.sh test   install what the tests need, then lint, type-check and run every test
set -euo pipefail
cd "$(dirname "$0")"

VENV=${CAMPROXY_VENV:-.venv}

ensure_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV" || {
            echo "dev.sh: python3 -m venv failed; on Debian: apt-get install python3-venv" >&2
            exit 1
        }
        "$VENV/bin/pip" install -q --upgrade pip
    fi
    # compat mode keeps twisted/plugins visible to Twisted's plugin scan.
    if ! "$VENV/bin/pip" install -q --config-settings editable_mode=compat -e ".$1" \
            > "$VENV/pip-install.log" 2>&1; then
        cat "$VENV/pip-install.log" >&2
        exit 1
    fi
}

ensure_test_servers() {
    # Browser tests drive Debian's chromium; cluster tests start real Redis and PostgreSQL.
    local missing=()
    [ -x /usr/bin/chromium ] || missing+=(chromium chromium-driver)
    command -v redis-server >/dev/null || missing+=(redis-server)
    ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
    if [ ${#missing[@]} -gt 0 ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
                --no-install-recommends "${missing[@]}"
        else
            echo "dev.sh: the tests need Debian's ${missing[*]} (apt-get install ${missing[*]})" >&2
        fi
    fi
}

case "${1:-}" in
    demo)
        shift
        ensure_venv ""
        exec "$VENV/bin/twistd" -n camproxy --demo --listen tcp:5000:interface=127.0.0.1 "$@"
        ;;
    test)
        shift
        ensure_venv "[test]"
        ensure_test_servers
        "$VENV/bin/ruff" check .
        "$VENV/bin/ruff" format --check .
        "$VENV/bin/mypy"
        "$VENV/bin/lint-imports" --no-cache
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    *)
        echo "usage: ./dev.sh demo|test [args]" >&2
        exit 2
        ;;
esac

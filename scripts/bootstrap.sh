#!/usr/bin/env bash
# Make this checkout runnable on a fresh machine: PostgreSQL, PgBouncer and pgpool-II
# from Debian packages when missing (needs root or sudo), and .venv with the package and its dev
# dependency group. Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
command -v pgpool >/dev/null 2>&1 || [ -x /usr/sbin/pgpool ] || missing+=(pgpool2)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]} (Debian packages)"
  if [ "$(id -u)" = 0 ]; then sudo=(); else sudo=(sudo -n); fi
  if "${sudo[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
      "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
    :
  else
    echo "bootstrap: could not install ${missing[*]}; install them and retry" >&2
    [ "${CI:-}" = "true" ] && exit 1
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.safe-migrate-deps
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "bootstrap: installing the package and its dev dependencies into .venv"
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade "pip>=25.1"
  .venv/bin/python -m pip install -q --disable-pip-version-check -e . --group dev
  touch "$stamp"
fi

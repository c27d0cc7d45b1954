#!/usr/bin/env bash
# Run the fault-and-storm subset (pytest -m matrix) on other PostgreSQL majors and
# poolers than the default (Debian PostgreSQL 15 behind PgBouncer in transaction
# mode, where scripts/test.sh runs everything). Each argument is MAJOR:POOLER, with
# POOLER one of pgbouncer-transaction, pgbouncer-session, pgpool, direct; without
# arguments, every combination CI runs. Installs the majors it needs first
# (scripts/install-pg.sh). Extra pytest arguments go after --.
#
#   bash scripts/test-matrix.sh                 # CI's combinations
#   bash scripts/test-matrix.sh 13:pgpool -- -x
set -euo pipefail
cd "$(dirname "$0")/.."

combos=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do combos+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
if [ ${#combos[@]} -eq 0 ]; then
  combos=(13:pgbouncer-transaction 14:pgbouncer-transaction 17:pgbouncer-transaction
          18:pgbouncer-transaction 15:pgbouncer-session 15:pgpool 16:pgpool 15:direct)
fi

bash scripts/bootstrap.sh
majors=$(printf '%s\n' "${combos[@]}" | cut -d: -f1 | { grep -vx 15 || true; } | sort -u | tr '\n' ' ')
# shellcheck disable=SC2086  # one argument per major
[ -n "$majors" ] && bash scripts/install-pg.sh $majors

passed=0 failed=0 summary=()
for combo in "${combos[@]}"; do
  major=${combo%%:*} pooler=${combo#*:}
  echo "== matrix: PostgreSQL $major, $pooler"
  started=$SECONDS
  if SAFE_MIGRATE_TEST_PG=$major SAFE_MIGRATE_TEST_POOLER=$pooler \
      .venv/bin/python -m pytest -m matrix -q -p no:cacheprovider "$@"; then
    passed=$((passed + 1)) verdict=passed
  else
    failed=$((failed + 1)) verdict=FAILED
  fi
  summary+=("$(printf '  %-38s %-7s %4d s' "PostgreSQL $major, $pooler" "$verdict" $((SECONDS - started)))")
done
echo "== matrix summary (combinations)"
printf '%s\n' "${summary[@]}"
echo "matrix: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

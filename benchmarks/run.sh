#!/usr/bin/env bash
# Reproduce benchmarks/RESULTS.md, benchmarks/results/comparison.json and the plots:
# bootstrap the checkout (PostgreSQL, PgBouncer, .venv), add the benchmark-only
# dependencies (Alembic, Flask-Migrate, matplotlib: the "bench" group), then run
# every figure against a private PostgreSQL + TLS PgBouncer started for the run.
# Arguments go to `python -m benchmarks.suite` (--only FIGS, --quick).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
bash scripts/bootstrap.sh
stamp=.venv/.safe-migrate-bench-deps
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "benchmarks: installing the bench dependency group into .venv"
  .venv/bin/python -m pip install -q --disable-pip-version-check -e . --group bench
  touch "$stamp"
fi
export BENCH_SETUP_SECONDS=$(( $(date +%s) - started ))
.venv/bin/python -m benchmarks.suite "$@"
echo "benchmarks/run.sh: $(( $(date +%s) - started )) s in all (setup ${BENCH_SETUP_SECONDS} s)"

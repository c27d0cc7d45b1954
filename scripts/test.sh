#!/usr/bin/env bash
# Run the whole test suite: unit tests, and integration tests against a real
# PostgreSQL and a TLS PgBouncer that the fixtures start. Extra args go to pytest.
# Other PostgreSQL majors and poolers: scripts/test-matrix.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
# A PostgreSQL 11 (13 MB, once) for the test that it is refused.
bash scripts/install-pg.sh 11 >/dev/null
exec .venv/bin/python -m pytest "$@"

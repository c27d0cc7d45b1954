#!/usr/bin/env bash
# Run the whole test suite: unit tests, and integration tests against a real
# PostgreSQL and a TLS PgBouncer that the fixtures start. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m pytest "$@"

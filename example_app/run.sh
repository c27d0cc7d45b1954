#!/usr/bin/env bash
# Apply the example app's migrations on an embedded PostgreSQL (or on $DATABASE_URL).
# Needs only python3 (>= 3.11): creates .venv and installs the package on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    echo "creating .venv and installing flask-safe-migrate[example] ..."
    python3 -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e '.[example]'
elif ! .venv/bin/python -c 'import flask_safe_migrate, pgserver' 2>/dev/null; then
    echo "installing flask-safe-migrate[example] into .venv ..."
    .venv/bin/python -m pip install --quiet -e '.[example]'
fi
echo "+ flask --app example_app.app:create_app safe-migrate $*"
exec .venv/bin/flask --app example_app.app:create_app safe-migrate "$@"

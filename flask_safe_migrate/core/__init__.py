"""The Flask-free core: settings, engine, retry, steps, ledger and runner."""

from __future__ import annotations

"""A small CRM that migrates its schema with flask-safe-migrate (see README)."""

from __future__ import annotations

"""Exactly-once, pooler-safe schema migrations for Flask apps on PostgreSQL."""

from __future__ import annotations

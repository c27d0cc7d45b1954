"""Lint the SQL of steps."""

from __future__ import annotations

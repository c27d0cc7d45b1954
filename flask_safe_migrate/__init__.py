"""Exactly-once, pooler-safe schema migrations for Flask apps on PostgreSQL."""

from __future__ import annotations

import importlib
import typing as t

from .core.commands import BaselineReport
from .core.commands import DoctorReport
from .core.commands import ExecReport
from .core.commands import PlanReport
from .core.commands import StatusReport
from .core.engine import build_migration_engine
from .core.engine import safe_url
from .core.exceptions import BaselineRefusedError
from .core.exceptions import ChecksumMismatchError
from .core.exceptions import ConfigurationError
from .core.exceptions import DatabaseUnavailableError
from .core.exceptions import DuplicateStepError
from .core.exceptions import LedgerError
from .core.exceptions import LintViolationError
from .core.exceptions import LockNotAcquiredError
from .core.exceptions import RegistrationError
from .core.exceptions import RetryExhaustedError
from .core.exceptions import SafeMigrateError
from .core.exceptions import StatementFailedError
from .core.exceptions import StatementRefusedError
from .core.exceptions import StepFailedError
from .core.exceptions import StepOrderError
from .core.exceptions import StepRefusedError
from .core.exceptions import UnsupportedServerError
from .core.retry import RetryPolicy
from .core.retry import RetryState
from .core.retry import RetryStats
from .core.revisions import alembic_include_object
from .core.revisions import register_revisions
from .core.runner import RunReport
from .core.runner import StepStatus
from .core.settings import MigrateSettings
from .core.steps import Phase
from .core.steps import Step
from .core.steps import StepHandle
from .core.steps import StepRegistry
from .core.transaction import execute_with_retry
from .core.transaction import run_with_retry

if t.TYPE_CHECKING:
    from . import cli
    from .extension import SafeMigrate
    from .state import MigrateState
    from .state import get_state

__all__ = [
    "BaselineRefusedError",
    "BaselineReport",
    "ChecksumMismatchError",
    "ConfigurationError",
    "DatabaseUnavailableError",
    "DoctorReport",
    "DuplicateStepError",
    "ExecReport",
    "LedgerError",
    "LintViolationError",
    "LockNotAcquiredError",
    "MigrateSettings",
    "MigrateState",
    "Phase",
    "PlanReport",
    "RegistrationError",
    "RetryExhaustedError",
    "RetryPolicy",
    "RetryState",
    "RetryStats",
    "RunReport",
    "SafeMigrate",
    "SafeMigrateError",
    "StatementFailedError",
    "StatementRefusedError",
    "StatusReport",
    "Step",
    "StepFailedError",
    "StepHandle",
    "StepOrderError",
    "StepRefusedError",
    "StepRegistry",
    "StepStatus",
    "UnsupportedServerError",
    "alembic_include_object",
    "build_migration_engine",
    "cli",
    "execute_with_retry",
    "get_state",
    "register_revisions",
    "run_with_retry",
    "safe_url",
]


def __getattr__(name: str) -> t.Any:
    """Load the Flask layer on first use: importing the core never imports Flask."""
    if name == "SafeMigrate":
        return importlib.import_module(".extension", __name__).SafeMigrate
    if name == "cli":
        return importlib.import_module(".cli", __name__)
    if name in ("MigrateState", "get_state"):
        return getattr(importlib.import_module(".state", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

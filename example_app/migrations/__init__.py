"""Steps written by ``flask safe-migrate generate``; init_app imports each module here
in file name order (``SAFE_MIGRATE_STEP_MODULES`` names this package)."""

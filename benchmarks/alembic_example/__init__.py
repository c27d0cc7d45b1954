"""The example app's steps as Alembic revisions, as a Flask-Migrate user writes them.

The files ``r*.py`` are copied into a fresh ``flask db init`` directory; this package
only keeps them importable for the type checker.
"""

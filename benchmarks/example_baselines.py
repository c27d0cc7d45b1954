"""The example app's migration as the two baselines write it.

naive: the statements a startup script runs through ``db.session`` on every boot,
each written to be harmless when repeated: ``IF NOT EXISTS`` for DDL, the seed
guarded by "only into an empty table" (the usual way), idempotent DELETEs and
UPDATE, and a plain ``CREATE UNIQUE INDEX IF NOT EXISTS`` (``db.session`` is always
in a transaction, so ``CONCURRENTLY`` is not an option there).

alembic: the revisions in :mod:`benchmarks.alembic_example`, copied into a
``flask db init`` directory.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from . import baselines

NAIVE_STATEMENTS = [
    """
    CREATE TABLE IF NOT EXISTS leads (
        id bigserial PRIMARY KEY,
        name text NOT NULL,
        email text,
        created_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS messages (
        id bigserial PRIMARY KEY,
        lead_id bigint,
        provider_msg_id text,
        body text,
        created_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    "ALTER TABLE leads ADD COLUMN IF NOT EXISTS order_index bigint",
    """
    INSERT INTO leads (name, email)
    SELECT v.name, v.email
    FROM (VALUES ('Ada Lovelace', 'ada@example.com'),
                 ('Alan Turing', 'alan@example.com')) AS v(name, email)
    WHERE NOT EXISTS (SELECT 1 FROM leads)
    """,
    """
    INSERT INTO messages (lead_id, provider_msg_id, body)
    SELECT s.lead_id, s.provider_msg_id, s.body
    FROM (
        SELECT l.id, v.provider_msg_id, v.body
        FROM (VALUES ('ada@example.com', 'msg-1', 'Hello'),
                     ('ada@example.com', 'msg-1', 'Hello (delivered twice)'),
                     ('alan@example.com', 'msg-2', 'Hi there'))
             AS v(email, provider_msg_id, body)
        JOIN leads l ON l.email = v.email
        UNION ALL
        SELECT 999999, 'msg-orphan', 'from a deleted lead'
    ) AS s(lead_id, provider_msg_id, body)
    WHERE NOT EXISTS (SELECT 1 FROM messages)
    """,
    """
    DELETE FROM messages
    WHERE lead_id IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM leads WHERE leads.id = messages.lead_id)
    """,
    """
    DELETE FROM messages m
    USING messages keep
    WHERE m.provider_msg_id = keep.provider_msg_id AND m.id > keep.id
    """,
    """
    CREATE UNIQUE INDEX IF NOT EXISTS messages_provider_msg_id_key
    ON messages (provider_msg_id) WHERE provider_msg_id IS NOT NULL
    """,
    "UPDATE leads SET order_index = id WHERE order_index IS NULL",
]

_REVISIONS = Path(__file__).with_name("alembic_example")


def prepare_alembic_directory(directory: Path) -> None:
    """``flask db init`` into ``directory`` and add the example's revisions."""
    baselines.init_alembic_directory(directory)
    for revision in sorted(_REVISIONS.glob("r*.py")):
        shutil.copy(revision, directory / "versions" / revision.name)

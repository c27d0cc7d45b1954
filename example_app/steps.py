"""The example CRM's migration steps, in order; imported by ``init_app``."""

from __future__ import annotations

from flask_safe_migrate import StepHandle

from .app import migrate

migrate.sql(
    "0001_create_leads",
    """
    CREATE TABLE IF NOT EXISTS leads (
        id bigserial PRIMARY KEY,
        name text NOT NULL,
        email text,
        created_at timestamptz NOT NULL DEFAULT now()
    )
    """,
)

migrate.sql(
    "0002_create_messages",
    """
    CREATE TABLE IF NOT EXISTS messages (
        id bigserial PRIMARY KEY,
        lead_id bigint,
        provider_msg_id text,
        body text,
        created_at timestamptz NOT NULL DEFAULT now()
    )
    """,
)

# Not idempotent on purpose: run twice, it would fail. The ledger makes it run once.
migrate.sql("0003_leads_order_index", "ALTER TABLE leads ADD COLUMN order_index bigint")

SEED_LEADS = [("Ada Lovelace", "ada@example.com"), ("Alan Turing", "alan@example.com")]


@migrate.step("0004_seed_demo_rows", category="seed")
def seed_demo_rows(m: StepHandle) -> None:
    """Insert a few demo leads and messages (with a duplicated provider id)."""
    for name, email in SEED_LEADS:
        m.execute(f"INSERT INTO leads (name, email) VALUES ('{name}', '{email}')")
    m.execute(
        """
        INSERT INTO messages (lead_id, provider_msg_id, body)
        SELECT l.id, v.provider_msg_id, v.body
        FROM (VALUES ('ada@example.com', 'msg-1', 'Hello'),
                     ('ada@example.com', 'msg-1', 'Hello (delivered twice)'),
                     ('alan@example.com', 'msg-2', 'Hi there'))
             AS v(email, provider_msg_id, body)
        JOIN leads l ON l.email = v.email
        """
    )
    m.execute(
        "INSERT INTO messages (lead_id, provider_msg_id, body) "
        "VALUES (999999, 'msg-orphan', 'from a deleted lead')"
    )


migrate.sql(
    "0005_orphan_messages_cleanup",
    """
    DELETE FROM messages
    WHERE lead_id IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM leads WHERE leads.id = messages.lead_id)
    """,
    category="orphan_cleanup",
)

# The index phase: CREATE UNIQUE INDEX CONCURRENTLY outside any transaction, after
# deleting the duplicates (keeping the oldest message of each provider id).
migrate.index(
    "0006_messages_provider_msg_id_key",
    table="messages",
    columns=["provider_msg_id"],
    unique=True,
    where="provider_msg_id IS NOT NULL",
    dedup_keep="min(id)",
)

# The backfill phase: keyset batches, each with its checkpoint, resumable.
migrate.backfill(
    "0007_backfill_order_index",
    table="leads",
    key="id",
    set="order_index = id",
    where="order_index IS NULL",
)

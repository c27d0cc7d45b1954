"""Index messages by lead: steps written by ``flask safe-migrate generate``.

Review each step before you commit it; every step is a plain call you can
edit. They run in this order, all in one ``flask safe-migrate`` run.
"""

from __future__ import annotations

from example_app.app import migrate

# Built concurrently, outside any transaction: writes go on.
migrate.index(
    "0008_index_messages_by_lead_01_ix_messages_lead_id",
    table="messages",
    columns=["lead_id"],
    name="ix_messages_lead_id",
)

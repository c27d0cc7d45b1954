"""0005_orphan_messages_cleanup"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        DELETE FROM messages
        WHERE lead_id IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM leads WHERE leads.id = messages.lead_id)
        """
    )


def downgrade() -> None:
    pass

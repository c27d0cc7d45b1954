"""0006_messages_provider_msg_id_key: dedup, then a concurrent unique index

CREATE INDEX CONCURRENTLY cannot run in a transaction: Alembic's documented way is
an autocommit_block, which commits the revision's transaction (the DELETE) first.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        DELETE FROM messages m
        USING messages keep
        WHERE m.provider_msg_id = keep.provider_msg_id AND m.id > keep.id
        """
    )
    with op.get_context().autocommit_block():
        op.create_index(
            "messages_provider_msg_id_key",
            "messages",
            ["provider_msg_id"],
            unique=True,
            postgresql_concurrently=True,
            postgresql_where=sa.text("provider_msg_id IS NOT NULL"),
        )


def downgrade() -> None:
    op.drop_index("messages_provider_msg_id_key", table_name="messages")

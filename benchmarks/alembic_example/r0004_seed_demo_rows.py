"""0004_seed_demo_rows: the same rows as example_app's seed step"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "INSERT INTO leads (name, email) VALUES "
        "('Ada Lovelace', 'ada@example.com'), ('Alan Turing', 'alan@example.com')"
    )
    op.execute(
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
    op.execute(
        "INSERT INTO messages (lead_id, provider_msg_id, body) "
        "VALUES (999999, 'msg-orphan', 'from a deleted lead')"
    )


def downgrade() -> None:
    pass

"""0007_backfill_order_index: a data migration, one UPDATE"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("UPDATE leads SET order_index = id WHERE order_index IS NULL")


def downgrade() -> None:
    pass

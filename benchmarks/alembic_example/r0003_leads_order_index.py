"""0003_leads_order_index"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("leads", sa.Column("order_index", sa.BigInteger()))


def downgrade() -> None:
    op.drop_column("leads", "order_index")

"""seed roles

Revision ID: 0a1b2c3d4e08
Revises: f1a2b3c4d507
Create Date: 2024-03-02 10:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0a1b2c3d4e08'
down_revision = 'f1a2b3c4d507'
branch_labels = None
depends_on = None

role = sa.table('role', sa.column('id', sa.Integer), sa.column('name', sa.String))


def upgrade():
    op.bulk_insert(role, [{'id': 1, 'name': 'admin'}, {'id': 2, 'name': 'member'}])
    op.execute("SELECT setval(pg_get_serial_sequence('role', 'id'), 2)")


def downgrade():
    op.execute(role.delete())

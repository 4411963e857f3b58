"""generations: a turn's row follows the generation of its reply; speculation counts

Revision ID: 8a4c2f61d0e7
Revises: 5e1d7a0c9b3f
Create Date: 2026-12-02 15:10:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision: str = '8a4c2f61d0e7'
down_revision: Union[str, None] = '5e1d7a0c9b3f'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('turns', schema=None) as batch_op:
        batch_op.add_column(sa.Column('generation', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('speculations', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('speculation', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False, server_default=''))


def downgrade() -> None:
    with op.batch_alter_table('turns', schema=None) as batch_op:
        batch_op.drop_column('speculation')
        batch_op.drop_column('speculations')
        batch_op.drop_column('generation')

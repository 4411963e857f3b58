"""endpoints: conversations know their endpoint; turns know when speech really ended

Revision ID: 5e1d7a0c9b3f
Revises: c2b4c521796f
Create Date: 2026-12-02 13:30:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision: str = '5e1d7a0c9b3f'
down_revision: Union[str, None] = 'c2b4c521796f'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('conversations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('endpoint', sqlmodel.sql.sqltypes.AutoString(length=130), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('medium', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('last_stage', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('replay_of', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False, server_default=''))
    with op.batch_alter_table('turns', schema=None) as batch_op:
        batch_op.add_column(sa.Column('speech_end_at', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('turns', schema=None) as batch_op:
        batch_op.drop_column('speech_end_at')
    with op.batch_alter_table('conversations', schema=None) as batch_op:
        batch_op.drop_column('replay_of')
        batch_op.drop_column('last_stage')
        batch_op.drop_column('medium')
        batch_op.drop_column('endpoint')

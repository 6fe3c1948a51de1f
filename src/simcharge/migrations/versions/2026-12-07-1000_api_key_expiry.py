"""API keys may expire (`api_keys.expires_at`): set at creation, or by a rotation, which ends
the old key when its overlap with the new one does.

Revision ID: 0014_api_key_expiry
Revises: 0013_staff_password_change
Create Date: 2026-12-07 10:20:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import simcharge.db

revision: str = "0014_api_key_expiry"
down_revision: str | None = "0013_staff_password_change"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("expires_at", simcharge.db.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("expires_at")

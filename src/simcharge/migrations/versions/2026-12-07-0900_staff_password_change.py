"""Staff: a password someone else set (an admin's reset, `simcharge staff password`) must be
changed by its holder at first use, and stops working after a while
(`staff_users.password_set_by_other_at`).

Revision ID: 0013_staff_password_change
Revises: 0012_receiver_index
Create Date: 2026-12-07 09:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import simcharge.db

revision: str = "0013_staff_password_change"
down_revision: str | None = "0012_receiver_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("staff_users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "password_set_by_other_at",
                simcharge.db.UTCDateTime(timezone=True),
                nullable=True,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("staff_users", schema=None) as batch_op:
        batch_op.drop_column("password_set_by_other_at")

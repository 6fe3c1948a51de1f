"""Retention: placeholder (privacy helper).

Revision ID: 0021_retention_more
Revises: 0020_staff_passkeys
Create Date: 2026-12-09 09:20:00+00:00
"""

from collections.abc import Sequence

revision: str = "0021_retention_more"
down_revision: str | None = "0020_staff_passkeys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass

"""Customers' two-step sign-in with a passkey (placeholder, filled by the round that needs it).

Revision ID: 0022_customer_second_factor
Revises: 0021_retention_more
Create Date: 2026-12-10 09:00:00+00:00
"""

from collections.abc import Sequence

revision: str = "0022_customer_second_factor"
down_revision: str | None = "0021_retention_more"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass

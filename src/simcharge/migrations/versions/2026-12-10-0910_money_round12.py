"""Money and lifecycle fixes of the twelfth round (placeholder, filled by the round that needs it).

Revision ID: 0023_money_round12
Revises: 0022_customer_second_factor
Create Date: 2026-12-10 09:10:00+00:00
"""

from collections.abc import Sequence

revision: str = "0023_money_round12"
down_revision: str | None = "0022_customer_second_factor"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass

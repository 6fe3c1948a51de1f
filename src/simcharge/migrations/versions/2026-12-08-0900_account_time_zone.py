"""Accounts may name their time zone (`accounts.time_zone`, an IANA name) and the regional
format their numbers, money and dates are written in (`accounts.format_locale`, e.g. `es_MX`).
Both nullable: none is the operator's zone and the language's own format.

Revision ID: 0016_account_time_zone
Revises: 0015_credit_notes
Create Date: 2026-12-08 09:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016_account_time_zone"
down_revision: str | None = "0015_credit_notes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("time_zone", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("format_locale", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_column("format_locale")
        batch_op.drop_column("time_zone")

"""API keys made once per request: the key of the request that made a key (`api_keys.request_key`,
unique: `<who>:<Idempotency-Key>`, the back-office form's one-time key or the admin API's
header) and a digest of what it asked for (`api_keys.request_hash`), so that a retry finds the
key it made instead of making a second one, and the same key with another request is refused.

Revision ID: 0019_api_key_request
Revises: 0018_retention
Create Date: 2026-12-09 09:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019_api_key_request"
down_revision: str | None = "0018_retention"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("request_key", sa.String(length=220), nullable=True))
        batch_op.add_column(sa.Column("request_hash", sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint(op.f("uq_api_keys_request_key"), ["request_key"])


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("uq_api_keys_request_key"), type_="unique")
        batch_op.drop_column("request_hash")
        batch_op.drop_column("request_key")

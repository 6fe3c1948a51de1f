"""Charging: tariffs, usage records, real-time charging sessions.

Revision ID: 0004_charging
Revises: 0003_orders
Create Date: 2026-11-25 12:07:42.663271+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import simcharge.db

revision: str = "0004_charging"
down_revision: str | None = "0003_orders"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "charging_sessions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("line_id", sa.Uuid(), nullable=False),
        sa.Column("client", sa.String(length=64), nullable=False),
        sa.Column("subscriber", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("zone", sa.String(length=32), nullable=True),
        sa.Column("country", sa.String(length=2), nullable=True),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("last_response", simcharge.db.JSONType, nullable=False),
        sa.Column("groups", simcharge.db.JSONType, nullable=False),
        sa.Column("deadline", simcharge.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", simcharge.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", simcharge.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_charging_sessions")),
    )
    with op.batch_alter_table("charging_sessions", schema=None) as batch_op:
        batch_op.create_index("ix_charging_sessions_line_id", ["line_id"], unique=False)
        batch_op.create_index(
            "ix_charging_sessions_open_deadline",
            ["deadline"],
            unique=False,
            postgresql_where=sa.text("state = 'open'"),
            sqlite_where=sa.text("state = 'open'"),
        )

    op.create_table(
        "tariffs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("service", sa.String(length=8), nullable=False),
        sa.Column("zone", sa.String(length=32), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("price", sa.BigInteger(), nullable=False),
        sa.Column("per_units", sa.BigInteger(), nullable=False),
        sa.Column("first_increment", sa.BigInteger(), nullable=False),
        sa.Column("next_increment", sa.BigInteger(), nullable=False),
        sa.Column("minimum", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", simcharge.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tariffs")),
        sa.UniqueConstraint(
            "service", "zone", "currency", name=op.f("uq_tariffs_service_zone_currency")
        ),
    )
    op.create_table(
        "usage_records",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column("external_id", sa.String(length=128), nullable=False),
        sa.Column("line_id", sa.Uuid(), nullable=False),
        sa.Column("service", sa.String(length=8), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=True),
        sa.Column("zone", sa.String(length=32), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("rated", sa.BigInteger(), nullable=False),
        sa.Column("from_buckets", sa.BigInteger(), nullable=False),
        sa.Column("from_wallet", sa.BigInteger(), nullable=False),
        sa.Column("charge", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("unbilled", sa.BigInteger(), nullable=False),
        sa.Column("taken", simcharge.db.JSONType, nullable=False),
        sa.Column("session_id", sa.Uuid(), nullable=True),
        sa.Column("started_at", simcharge.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", simcharge.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_records")),
    )
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.create_index("ix_usage_records_line_id", ["line_id", "started_at"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_records_line_id")

    op.drop_table("usage_records")
    op.drop_table("tariffs")
    with op.batch_alter_table("charging_sessions", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_charging_sessions_open_deadline",
            postgresql_where=sa.text("state = 'open'"),
            sqlite_where=sa.text("state = 'open'"),
        )
        batch_op.drop_index("ix_charging_sessions_line_id")

    op.drop_table("charging_sessions")

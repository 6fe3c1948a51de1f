"""Lifecycle and balance management: line events, warning marks, balance actions, indexes.

Revision ID: 0005_lifecycle
Revises: 0003_orders
Create Date: 2026-11-25 12:07:47.402775+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import simcharge.db

revision: str = "0005_lifecycle"
down_revision: str | None = "0004_charging"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "lifecycle_marks",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("at", simcharge.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_id", sa.Uuid(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_lifecycle_marks")),
    )
    op.create_table(
        "balance_actions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("line_id", sa.Uuid(), nullable=False),
        sa.Column("receiver_line_id", sa.Uuid(), nullable=True),
        sa.Column("usage_type", sa.String(length=16), nullable=False),
        sa.Column("unit", sa.String(length=8), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("fee", sa.BigInteger(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("receiver_account_id", sa.Uuid(), nullable=True),
        sa.Column("pending_transfer_id", sa.Uuid(), nullable=True),
        sa.Column("reason", sa.String(length=255), nullable=True),
        sa.Column("request", simcharge.db.JSONType, nullable=False),
        sa.Column("actor", sa.String(length=120), nullable=False),
        sa.Column("idempotency_key", sa.String(length=128), nullable=True),
        sa.Column("requested_at", simcharge.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("confirmed_at", simcharge.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["line_id"], ["lines.id"], name=op.f("fk_balance_actions_line_id_lines")
        ),
        sa.ForeignKeyConstraint(
            ["receiver_line_id"],
            ["lines.id"],
            name=op.f("fk_balance_actions_receiver_line_id_lines"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_balance_actions")),
        sa.UniqueConstraint(
            "actor", "idempotency_key", name=op.f("uq_balance_actions_actor_idempotency_key")
        ),
    )
    with op.batch_alter_table("balance_actions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_balance_actions_line_id", ["line_id", "kind", "requested_at"], unique=False
        )

    op.create_table(
        "line_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("line_id", sa.Uuid(), nullable=False),
        sa.Column("from_state", sa.String(length=16), nullable=False),
        sa.Column("to_state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=255), nullable=False),
        sa.Column("actor", sa.String(length=120), nullable=False),
        sa.Column("created_at", simcharge.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["line_id"], ["lines.id"], name=op.f("fk_line_events_line_id_lines")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_line_events")),
    )
    with op.batch_alter_table("line_events", schema=None) as batch_op:
        batch_op.create_index("ix_line_events_line_id", ["line_id", "created_at"], unique=False)

    with op.batch_alter_table("buckets", schema=None) as batch_op:
        batch_op.create_index("ix_buckets_expires_at", ["expires_at"], unique=False)

    with op.batch_alter_table("lines", schema=None) as batch_op:
        batch_op.create_index(
            "ix_lines_state_last_activity_at", ["state", "last_activity_at"], unique=False
        )
        batch_op.create_index(
            "ix_lines_state_state_changed_at", ["state", "state_changed_at"], unique=False
        )
        batch_op.create_index(
            "ix_lines_state_validity_end", ["state", "validity_end"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("lines", schema=None) as batch_op:
        batch_op.drop_index("ix_lines_state_validity_end")
        batch_op.drop_index("ix_lines_state_state_changed_at")
        batch_op.drop_index("ix_lines_state_last_activity_at")

    with op.batch_alter_table("buckets", schema=None) as batch_op:
        batch_op.drop_index("ix_buckets_expires_at")

    with op.batch_alter_table("line_events", schema=None) as batch_op:
        batch_op.drop_index("ix_line_events_line_id")

    op.drop_table("line_events")
    with op.batch_alter_table("balance_actions", schema=None) as batch_op:
        batch_op.drop_index("ix_balance_actions_line_id")

    op.drop_table("balance_actions")
    op.drop_table("lifecycle_marks")

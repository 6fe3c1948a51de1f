"""Orders: payments, provider events, refunds, idempotency keys, receipts, the sandbox.

Revision ID: 0003_orders
Revises: 0002_identity
Create Date: 2026-11-25 11:02:21.984992+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import simcharge.db

revision: str = "0003_orders"
down_revision: str | None = "0002_identity"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "receipt_counters",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_receipt_counters")),
    )
    op.create_table(
        "sandbox_payments",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("reference", sa.String(length=32), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("return_url", sa.Text(), nullable=False),
        sa.Column("cancel_url", sa.Text(), nullable=False),
        sa.Column("notify_url", sa.Text(), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("expires_at", simcharge.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("refunded", sa.BigInteger(), nullable=False),
        sa.Column("created_at", simcharge.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("paid_at", simcharge.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sandbox_payments")),
        sa.UniqueConstraint("reference", name=op.f("uq_sandbox_payments_reference")),
    )
    op.create_table(
        "orders",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("reference", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("line_id", sa.Uuid(), nullable=False),
        sa.Column("msisdn", sa.String(length=16), nullable=False),
        sa.Column("plan_id", sa.Uuid(), nullable=False),
        sa.Column("plan_code", sa.String(length=64), nullable=False),
        sa.Column("plan_version", sa.BigInteger(), nullable=False),
        sa.Column("plan_snapshot", simcharge.db.JSONType, nullable=False),
        sa.Column("method_code", sa.String(length=32), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("price", sa.BigInteger(), nullable=False),
        sa.Column("fee", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("created_at", simcharge.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", simcharge.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("paid_at", simcharge.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("fulfilled_at", simcharge.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("closed_at", simcharge.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("paid_amount", sa.BigInteger(), nullable=True),
        sa.Column("paid_currency", sa.String(length=3), nullable=True),
        sa.Column("receipt_number", sa.String(length=24), nullable=True),
        sa.Column("refunded_amount", sa.BigInteger(), nullable=False),
        sa.Column("attention", sa.String(length=24), nullable=True),
        sa.Column("attention_note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_orders_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(["line_id"], ["lines.id"], name=op.f("fk_orders_line_id_lines")),
        sa.ForeignKeyConstraint(["plan_id"], ["plans.id"], name=op.f("fk_orders_plan_id_plans")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orders")),
        sa.UniqueConstraint("receipt_number", name=op.f("uq_orders_receipt_number")),
        sa.UniqueConstraint("reference", name=op.f("uq_orders_reference")),
    )
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index("ix_orders_account_id", ["account_id", "created_at"], unique=False)
        batch_op.create_index(
            "ix_orders_attention",
            ["attention"],
            unique=False,
            postgresql_where=sa.text("attention IS NOT NULL"),
            sqlite_where=sa.text("attention IS NOT NULL"),
        )
        batch_op.create_index("ix_orders_line_id", ["line_id", "created_at"], unique=False)
        batch_op.create_index("ix_orders_state_expires", ["state", "expires_at"], unique=False)

    op.create_table(
        "idempotency_keys",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", simcharge.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_idempotency_keys_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_idempotency_keys_order_id_orders")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_keys")),
        sa.UniqueConstraint("account_id", "key", name=op.f("uq_idempotency_keys_account_id_key")),
    )
    op.create_table(
        "payments",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("flow", sa.String(length=8), nullable=False),
        sa.Column("provider_ref", sa.String(length=128), nullable=True),
        sa.Column("payment_id", sa.String(length=128), nullable=True),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("redirect_url", sa.Text(), nullable=True),
        sa.Column("qr_payload", sa.Text(), nullable=True),
        sa.Column("checkout_expires_at", simcharge.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", simcharge.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", simcharge.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("next_check_at", simcharge.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("checks", sa.BigInteger(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_payments_order_id_orders")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payments")),
        sa.UniqueConstraint("order_id", name=op.f("uq_payments_order_id")),
        sa.UniqueConstraint(
            "provider", "provider_ref", name=op.f("uq_payments_provider_provider_ref")
        ),
    )
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.create_index(
            "ix_payments_due",
            ["next_check_at"],
            unique=False,
            postgresql_where=sa.text("state = 'pending'"),
            sqlite_where=sa.text("state = 'pending'"),
        )

    op.create_table(
        "provider_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=True),
        sa.Column("payload", simcharge.db.JSONType, nullable=False),
        sa.Column("status", simcharge.db.JSONType, nullable=True),
        sa.Column("refund", simcharge.db.JSONType, nullable=True),
        sa.Column("received_at", simcharge.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("processed_at", simcharge.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_provider_events_order_id_orders")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_events")),
        sa.UniqueConstraint(
            "provider", "event_id", name=op.f("uq_provider_events_provider_event_id")
        ),
    )
    with op.batch_alter_table("provider_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_provider_events_order_id", ["order_id", "received_at"], unique=False
        )
        batch_op.create_index(
            "ix_provider_events_unprocessed",
            ["received_at"],
            unique=False,
            postgresql_where=sa.text("processed_at IS NULL"),
            sqlite_where=sa.text("processed_at IS NULL"),
        )

    op.create_table(
        "receipt_documents",
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("pdf", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", simcharge.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_receipt_documents_order_id_orders")
        ),
        sa.PrimaryKeyConstraint("order_id", "language", name=op.f("pk_receipt_documents")),
    )
    op.create_table(
        "refunds",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("reference", sa.String(length=32), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("provider_refund_id", sa.String(length=128), nullable=True),
        sa.Column("requested_by", sa.String(length=80), nullable=False),
        sa.Column("request_key", sa.String(length=220), nullable=True),
        sa.Column("plan", simcharge.db.JSONType, nullable=False),
        sa.Column("created_at", simcharge.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("completed_at", simcharge.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_refunds_order_id_orders")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refunds")),
        sa.UniqueConstraint("reference", name=op.f("uq_refunds_reference")),
        sa.UniqueConstraint("request_key", name=op.f("uq_refunds_request_key")),
    )
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.create_index("ix_refunds_order_id", ["order_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.drop_index("ix_refunds_order_id")

    op.drop_table("refunds")
    op.drop_table("receipt_documents")
    with op.batch_alter_table("provider_events", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_provider_events_unprocessed",
            postgresql_where=sa.text("processed_at IS NULL"),
            sqlite_where=sa.text("processed_at IS NULL"),
        )
        batch_op.drop_index("ix_provider_events_order_id")

    op.drop_table("provider_events")
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_payments_due",
            postgresql_where=sa.text("state = 'pending'"),
            sqlite_where=sa.text("state = 'pending'"),
        )

    op.drop_table("payments")
    op.drop_table("idempotency_keys")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index("ix_orders_state_expires")
        batch_op.drop_index("ix_orders_line_id")
        batch_op.drop_index(
            "ix_orders_attention",
            postgresql_where=sa.text("attention IS NOT NULL"),
            sqlite_where=sa.text("attention IS NOT NULL"),
        )
        batch_op.drop_index("ix_orders_account_id")

    op.drop_table("orders")
    op.drop_table("sandbox_payments")
    op.drop_table("receipt_counters")

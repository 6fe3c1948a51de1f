"""Foundation: ledger, accounts, lines and buckets, catalog, API keys, outbox.

Revision ID: 0001_foundation
Revises:
Create Date: 2026-11-25 09:28:13.155737+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import simcharge.db

revision: str = "0001_foundation"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=128), nullable=True),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.Column("email_verified_at", simcharge.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("phone", sa.String(length=16), nullable=True),
        sa.Column("phone_verified_at", simcharge.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", simcharge.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", simcharge.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("email", name=op.f("uq_accounts_email")),
        sa.UniqueConstraint("phone", name=op.f("uq_accounts_phone")),
        sa.UniqueConstraint("username", name=op.f("uq_accounts_username")),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=80), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("scopes", simcharge.db.JSONType, nullable=False),
        sa.Column("created_at", simcharge.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", simcharge.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", simcharge.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("prefix", name=op.f("uq_api_keys_prefix")),
    )
    op.create_table(
        "ledger_accounts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("unit", sa.String(length=8), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=160), nullable=True),
        sa.Column("line_id", sa.Uuid(), nullable=True),
        sa.Column("debits_must_not_exceed_credits", sa.Boolean(), nullable=False),
        sa.Column("credits_must_not_exceed_debits", sa.Boolean(), nullable=False),
        sa.Column("debits_pending", sa.BigInteger(), nullable=False),
        sa.Column("debits_posted", sa.BigInteger(), nullable=False),
        sa.Column("credits_pending", sa.BigInteger(), nullable=False),
        sa.Column("credits_posted", sa.BigInteger(), nullable=False),
        sa.Column("created_at", simcharge.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "NOT (debits_must_not_exceed_credits AND credits_must_not_exceed_debits)",
            name=op.f("ck_ledger_accounts_one_bound_only"),
        ),
        sa.CheckConstraint(
            "NOT credits_must_not_exceed_debits OR credits_pending + credits_posted <= debits_posted",
            name=op.f("ck_ledger_accounts_credits_within_debits"),
        ),
        sa.CheckConstraint(
            "NOT debits_must_not_exceed_credits OR debits_pending + debits_posted <= credits_posted",
            name=op.f("ck_ledger_accounts_debits_within_credits"),
        ),
        sa.CheckConstraint(
            "credits_pending >= 0 AND credits_posted >= 0",
            name=op.f("ck_ledger_accounts_credits_not_negative"),
        ),
        sa.CheckConstraint(
            "debits_pending >= 0 AND debits_posted >= 0",
            name=op.f("ck_ledger_accounts_debits_not_negative"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_accounts")),
        sa.UniqueConstraint("key", name=op.f("uq_ledger_accounts_key")),
        postgresql_with={"fillfactor": 70},
    )
    with op.batch_alter_table("ledger_accounts", schema=None) as batch_op:
        batch_op.create_index("ix_ledger_accounts_line_id", ["line_id"], unique=False)

    op.create_table(
        "ledger_transfers",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("debit_account_id", sa.Uuid(), nullable=False),
        sa.Column("credit_account_id", sa.Uuid(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("unit", sa.String(length=8), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("pending_id", sa.Uuid(), nullable=True),
        sa.Column("pending_status", sa.String(length=8), nullable=True),
        sa.Column("timeout_at", simcharge.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("reference", sa.String(length=160), nullable=True),
        sa.Column("created_at", simcharge.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(kind = 'pending') = (pending_status IS NOT NULL)",
            name=op.f("ck_ledger_transfers_status_only_when_pending"),
        ),
        sa.CheckConstraint(
            "(kind IN ('post_pending', 'void_pending', 'expire_pending')) = (pending_id IS NOT NULL)",
            name=op.f("ck_ledger_transfers_pending_id_when_resolving"),
        ),
        sa.CheckConstraint("amount >= 0", name=op.f("ck_ledger_transfers_amount_not_negative")),
        sa.CheckConstraint(
            "debit_account_id <> credit_account_id",
            name=op.f("ck_ledger_transfers_accounts_differ"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_transfers")),
    )
    with op.batch_alter_table("ledger_transfers", schema=None) as batch_op:
        batch_op.create_index(
            "ix_ledger_transfers_credit_account_id",
            ["credit_account_id", "created_at"],
            unique=False,
        )
        batch_op.create_index(
            "ix_ledger_transfers_debit_account_id", ["debit_account_id", "created_at"], unique=False
        )
        batch_op.create_index(
            "ix_ledger_transfers_open_pending",
            ["timeout_at"],
            unique=False,
            postgresql_where=sa.text("pending_status = 'pending'"),
            sqlite_where=sa.text("pending_status = 'pending'"),
        )
        batch_op.create_index(
            "uq_ledger_transfers_pending_id",
            ["pending_id"],
            unique=True,
            postgresql_where=sa.text("pending_id IS NOT NULL"),
            sqlite_where=sa.text("pending_id IS NOT NULL"),
        )

    op.create_table(
        "outbox_jobs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("payload", simcharge.db.JSONType, nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("run_at", simcharge.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.BigInteger(), nullable=False),
        sa.Column("max_attempts", sa.BigInteger(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("locked_by", sa.String(length=64), nullable=True),
        sa.Column("locked_until", simcharge.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("dedupe_key", sa.String(length=160), nullable=True),
        sa.Column("created_at", simcharge.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", simcharge.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_jobs")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_outbox_jobs_dedupe_key")),
    )
    with op.batch_alter_table("outbox_jobs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_outbox_jobs_due",
            ["run_at"],
            unique=False,
            postgresql_where=sa.text("status = 'pending'"),
            sqlite_where=sa.text("status = 'pending'"),
        )
        batch_op.create_index(
            "ix_outbox_jobs_leased",
            ["locked_until"],
            unique=False,
            postgresql_where=sa.text("status = 'running'"),
            sqlite_where=sa.text("status = 'running'"),
        )
        batch_op.create_index(
            "ix_outbox_jobs_status_finished", ["status", "finished_at"], unique=False
        )

    op.create_table(
        "payment_methods",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("names", simcharge.db.JSONType, nullable=False),
        sa.Column("descriptions", simcharge.db.JSONType, nullable=False),
        sa.Column("currencies", simcharge.db.JSONType, nullable=False),
        sa.Column("fee_percent_bp", sa.BigInteger(), nullable=False),
        sa.Column("fee_fixed", simcharge.db.JSONType, nullable=False),
        sa.Column("min_amount", simcharge.db.JSONType, nullable=False),
        sa.Column("max_amount", simcharge.db.JSONType, nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("sort_order", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", simcharge.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_methods")),
        sa.UniqueConstraint("code", name=op.f("uq_payment_methods_code")),
    )
    op.create_table(
        "plans",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("names", simcharge.db.JSONType, nullable=False),
        sa.Column("descriptions", simcharge.db.JSONType, nullable=False),
        sa.Column("wallet_credit", simcharge.db.JSONType, nullable=False),
        sa.Column("buckets", simcharge.db.JSONType, nullable=False),
        sa.Column("validity_days", sa.BigInteger(), nullable=False),
        sa.Column("methods", simcharge.db.JSONType, nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("sort_order", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", simcharge.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plans")),
        sa.UniqueConstraint("code", name=op.f("uq_plans_code")),
    )
    op.create_table(
        "zones",
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("names", simcharge.db.JSONType, nullable=False),
        sa.Column("countries", simcharge.db.JSONType, nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_zones")),
    )
    op.create_table(
        "lines",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("msisdn", sa.String(length=16), nullable=False),
        sa.Column("iccid", sa.String(length=22), nullable=False),
        sa.Column("imsi", sa.String(length=15), nullable=True),
        sa.Column("activation_code", sa.String(length=255), nullable=True),
        sa.Column("account_id", sa.Uuid(), nullable=True),
        sa.Column("label", sa.String(length=64), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("wallet_account_id", sa.Uuid(), nullable=False),
        sa.Column("validity_end", simcharge.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_activity_at", simcharge.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("state_changed_at", simcharge.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", simcharge.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_lines_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["wallet_account_id"],
            ["ledger_accounts.id"],
            name=op.f("fk_lines_wallet_account_id_ledger_accounts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lines")),
        sa.UniqueConstraint("iccid", name=op.f("uq_lines_iccid")),
        sa.UniqueConstraint("imsi", name=op.f("uq_lines_imsi")),
        sa.UniqueConstraint("msisdn", name=op.f("uq_lines_msisdn")),
    )
    with op.batch_alter_table("lines", schema=None) as batch_op:
        batch_op.create_index("ix_lines_account_id", ["account_id"], unique=False)

    op.create_table(
        "plan_prices",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("plan_id", sa.Uuid(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["plan_id"], ["plans.id"], name=op.f("fk_plan_prices_plan_id_plans"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plan_prices")),
        sa.UniqueConstraint("plan_id", "currency", name=op.f("uq_plan_prices_plan_id_currency")),
    )
    op.create_table(
        "buckets",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("line_id", sa.Uuid(), nullable=False),
        sa.Column("unit", sa.String(length=8), nullable=False),
        sa.Column("initial_amount", sa.BigInteger(), nullable=False),
        sa.Column("zones", simcharge.db.JSONType, nullable=False),
        sa.Column("expires_at", simcharge.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("source", sa.String(length=160), nullable=False),
        sa.Column("created_at", simcharge.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["id"], ["ledger_accounts.id"], name=op.f("fk_buckets_id_ledger_accounts")
        ),
        sa.ForeignKeyConstraint(["line_id"], ["lines.id"], name=op.f("fk_buckets_line_id_lines")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_buckets")),
    )
    with op.batch_alter_table("buckets", schema=None) as batch_op:
        batch_op.create_index("ix_buckets_line_id", ["line_id", "unit", "expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("buckets", schema=None) as batch_op:
        batch_op.drop_index("ix_buckets_line_id")

    op.drop_table("buckets")
    op.drop_table("plan_prices")
    with op.batch_alter_table("lines", schema=None) as batch_op:
        batch_op.drop_index("ix_lines_account_id")

    op.drop_table("lines")
    op.drop_table("zones")
    op.drop_table("plans")
    op.drop_table("payment_methods")
    with op.batch_alter_table("outbox_jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_jobs_status_finished")
        batch_op.drop_index(
            "ix_outbox_jobs_leased",
            postgresql_where=sa.text("status = 'running'"),
            sqlite_where=sa.text("status = 'running'"),
        )
        batch_op.drop_index(
            "ix_outbox_jobs_due",
            postgresql_where=sa.text("status = 'pending'"),
            sqlite_where=sa.text("status = 'pending'"),
        )

    op.drop_table("outbox_jobs")
    with op.batch_alter_table("ledger_transfers", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_ledger_transfers_pending_id",
            postgresql_where=sa.text("pending_id IS NOT NULL"),
            sqlite_where=sa.text("pending_id IS NOT NULL"),
        )
        batch_op.drop_index(
            "ix_ledger_transfers_open_pending",
            postgresql_where=sa.text("pending_status = 'pending'"),
            sqlite_where=sa.text("pending_status = 'pending'"),
        )
        batch_op.drop_index("ix_ledger_transfers_debit_account_id")
        batch_op.drop_index("ix_ledger_transfers_credit_account_id")

    op.drop_table("ledger_transfers")
    with op.batch_alter_table("ledger_accounts", schema=None) as batch_op:
        batch_op.drop_index("ix_ledger_accounts_line_id")

    op.drop_table("ledger_accounts")
    op.drop_table("api_keys")
    op.drop_table("accounts")

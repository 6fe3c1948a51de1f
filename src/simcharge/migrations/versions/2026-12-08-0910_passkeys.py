"""Passkeys (WebAuthn): the credentials customers sign in with, and the short-lived challenges
of their ceremonies (kept only as keyed hashes, used once).

Revision ID: 0017_passkeys
Revises: 0016_account_time_zone
Create Date: 2026-12-08 09:10:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import simcharge.db

revision: str = "0017_passkeys"
down_revision: str | None = "0016_account_time_zone"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "passkeys",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("credential_id", sa.LargeBinary(), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("sign_count", sa.BigInteger(), nullable=False),
        sa.Column("transports", simcharge.db.JSONType, nullable=False),
        sa.Column("aaguid", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("backed_up", sa.Boolean(), nullable=False),
        sa.Column("created_at", simcharge.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", simcharge.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_passkeys_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_passkeys")),
        sa.UniqueConstraint("credential_id", name=op.f("uq_passkeys_credential_id")),
    )
    with op.batch_alter_table("passkeys", schema=None) as batch_op:
        batch_op.create_index("ix_passkeys_account_id", ["account_id"], unique=False)

    op.create_table(
        "passkey_challenges",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=True),
        sa.Column("challenge_hash", sa.String(length=64), nullable=False),
        sa.Column("holder_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", simcharge.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", simcharge.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_at", simcharge.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_passkey_challenges_account_id_accounts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_passkey_challenges")),
        sa.UniqueConstraint("challenge_hash", name=op.f("uq_passkey_challenges_challenge_hash")),
    )
    with op.batch_alter_table("passkey_challenges", schema=None) as batch_op:
        batch_op.create_index("ix_passkey_challenges_expires_at", ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("passkey_challenges", schema=None) as batch_op:
        batch_op.drop_index("ix_passkey_challenges_expires_at")
    op.drop_table("passkey_challenges")
    with op.batch_alter_table("passkeys", schema=None) as batch_op:
        batch_op.drop_index("ix_passkeys_account_id")
    op.drop_table("passkeys")

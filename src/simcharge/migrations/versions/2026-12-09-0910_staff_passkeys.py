"""Staff passkeys and time zones: the passkeys staff sign in to the back office with
(`staff_passkeys`; their ceremonies' challenges share `passkey_challenges`, under purposes of
their own), and each staff member's own time zone (`staff_users.time_zone`, an IANA name,
nullable: none is the operator's zone).

Revision ID: 0020_staff_passkeys
Revises: 0019_api_key_request
Create Date: 2026-12-09 09:10:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import simcharge.db

revision: str = "0020_staff_passkeys"
down_revision: str | None = "0019_api_key_request"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("staff_users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("time_zone", sa.String(length=64), nullable=True))

    op.create_table(
        "staff_passkeys",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("staff_id", sa.Uuid(), nullable=False),
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
            ["staff_id"], ["staff_users.id"], name=op.f("fk_staff_passkeys_staff_id_staff_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_passkeys")),
        sa.UniqueConstraint("credential_id", name=op.f("uq_staff_passkeys_credential_id")),
    )
    with op.batch_alter_table("staff_passkeys", schema=None) as batch_op:
        batch_op.create_index("ix_staff_passkeys_staff_id", ["staff_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("staff_passkeys", schema=None) as batch_op:
        batch_op.drop_index("ix_staff_passkeys_staff_id")
    op.drop_table("staff_passkeys")
    with op.batch_alter_table("staff_users", schema=None) as batch_op:
        batch_op.drop_column("time_zone")

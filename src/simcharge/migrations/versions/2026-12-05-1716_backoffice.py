"""Back office: tariffs versioned (`tariffs.version`, `tariff_versions` with when each was in
force); the audit log also refuses TRUNCATE on PostgreSQL.

Revision ID: 0008_backoffice
Revises: 0007_charging
Create Date: 2026-12-05 17:16:00+00:00
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import simcharge.db
from simcharge.kit.ids import uuid7

revision: str = "0008_backoffice"
down_revision: str | None = "0007_charging"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SINCE = datetime(2000, 1, 1, tzinfo=UTC)
"""A tariff known before versions were kept is version 1, in force from the start."""


def upgrade() -> None:
    with op.batch_alter_table("tariffs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("version", sa.BigInteger(), nullable=False, server_default="1")
        )
    versions = op.create_table(
        "tariff_versions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("service", sa.String(length=8), nullable=False),
        sa.Column("zone", sa.String(length=32), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("price", sa.BigInteger(), nullable=False),
        sa.Column("per_units", sa.BigInteger(), nullable=False),
        sa.Column("first_increment", sa.BigInteger(), nullable=False),
        sa.Column("next_increment", sa.BigInteger(), nullable=False),
        sa.Column("minimum", sa.BigInteger(), nullable=False),
        sa.Column("valid_from", simcharge.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("valid_until", simcharge.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tariff_versions")),
        sa.UniqueConstraint(
            "service",
            "zone",
            "currency",
            "version",
            name=op.f("uq_tariff_versions_service_zone_currency_version"),
        ),
    )
    with op.batch_alter_table("tariff_versions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_tariff_versions_valid_from",
            ["service", "zone", "currency", "valid_from"],
            unique=False,
        )
    columns = ("service", "zone", "currency", "price", "per_units", "first_increment",
               "next_increment", "minimum")  # fmt: skip
    tariffs = sa.table("tariffs", *(sa.column(c) for c in columns))
    rows = op.get_bind().execute(sa.select(*tariffs.c)).all()
    if rows:
        op.bulk_insert(
            versions,
            [
                {
                    "id": uuid7(),
                    **dict(zip(columns, row, strict=True)),
                    "version": 1,
                    "valid_from": SINCE,
                    "valid_until": None,
                }
                for row in rows
            ],
        )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE TRIGGER audit_entries_no_truncate BEFORE TRUNCATE ON audit_entries "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_entries_no_truncate ON audit_entries")
    with op.batch_alter_table("tariff_versions", schema=None) as batch_op:
        batch_op.drop_index("ix_tariff_versions_valid_from")
    op.drop_table("tariff_versions")
    with op.batch_alter_table("tariffs", schema=None) as batch_op:
        batch_op.drop_column("version")

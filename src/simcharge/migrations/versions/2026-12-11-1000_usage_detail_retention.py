"""Usage records' detail swept by age (`accounts.retention`, `SIMCHARGE_RETENTION_USAGE_DETAIL_DAYS`).

`ix_usage_records_detail_kept` (`started_at`) holds the usage records that still keep their
traffic and location detail (`zone <> ''`): the retention rule `usage_records.detail` reads
its batch of the oldest through it, and a record it has stripped (zone and country emptied,
the start cut to its day) leaves the index — so each batch is a range scan, never a read of
the years of stripped records before it. Partial, written as the rule writes its condition (a
literal), so that a prepared statement's generic plan can use it.

No column changes: `zone` is NOT NULL and is emptied to `''`, `country` is nullable already.

Built in the migration's transaction as the other migrations build theirs (it holds off writes
to `usage_records` while it reads the table). On a large table, build it beforehand without
that lock, with exactly this definition, and the upgrade finds it made (`IF NOT EXISTS`):

    CREATE INDEX CONCURRENTLY ix_usage_records_detail_kept ON usage_records
        (started_at) WHERE zone <> '';

Revision ID: 0029_usage_detail_retention
Revises: 0028_journal_indexes
Create Date: 2026-12-11 10:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0029_usage_detail_retention"
down_revision: str | None = "0028_journal_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WHERE = "zone <> ''"


def upgrade() -> None:
    op.create_index(
        "ix_usage_records_detail_kept",
        "usage_records",
        ["started_at"],
        postgresql_where=sa.text(_WHERE),
        sqlite_where=sa.text(_WHERE),
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_index("ix_usage_records_detail_kept", table_name="usage_records")

"""Retention, the rules that were missing (`accounts.retention`): a dead job's payload emptied
(`outbox_jobs.payload_removed_at`), a closed account's tickets redacted (`tickets.redacted_at`),
and the partial indexes their batches and the masking of security events' MSISDNs scan.

Revision ID: 0021_retention_more
Revises: 0020_staff_passkeys
Create Date: 2026-12-09 09:20:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import simcharge.db

revision: str = "0021_retention_more"
down_revision: str | None = "0020_staff_passkeys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = (("outbox_jobs", "payload_removed_at"), ("tickets", "redacted_at"))
_PARTIAL = (
    (
        "ix_security_events_personal",
        "security_events",
        "created_at",
        "kind IN ('line_attach_requested', 'line_attached')",
    ),
    (
        "ix_outbox_jobs_dead_kept",
        "outbox_jobs",
        "finished_at",
        "status = 'dead' AND payload_removed_at IS NULL",
    ),
    ("ix_accounts_closed", "accounts", "updated_at", "status = 'closed'"),
    ("ix_tickets_unredacted", "tickets", "account_id", "redacted_at IS NULL"),
)


def upgrade() -> None:
    for table, column in _COLUMNS:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column(column, simcharge.db.UTCDateTime(timezone=True), nullable=True)
            )
    for name, table, column, where in _PARTIAL:
        op.create_index(
            name,
            table,
            [column],
            postgresql_where=sa.text(where),
            sqlite_where=sa.text(where),
        )


def downgrade() -> None:
    for name, table, *_ in _PARTIAL:
        op.drop_index(name, table_name=table)
    for table, column in _COLUMNS:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column(column)

"""The ledger's journal and the unmatched payment notifications, read through indexes.

`ix_ledger_transfers_moved` (`created_at`, `id`) holds the transfers that moved money
(`kind IN ('posted', 'post_pending')`, `reports.MOVED`): the journal
(`GET /admin/ledger/transfers`) pages a period of them in that order, and read the whole table
to do so. Reservations (`pending`) and their releases are left out, so the charging path's
holds write no entry in it.

`ix_provider_events_unmatched` (`outcome`, `received_at`, `id`) holds the notifications that
matched no order, waiting (`unmatched`) or settled by hand (`unmatched_settled`), a few among
every notification ever received: their list (`/backoffice/attention/unmatched`,
`GET /admin/provider-events`) reads them newest first and counted them by a scan.

Both are partial: the queries write the condition as the index does (literal values), so each
plan can use it whatever the parameters (asyncpg prepares every statement: a generic plan
knows no parameter's value).

Built as the other migrations build theirs (in the migration's transaction; none is built
`CONCURRENTLY`): the build holds off writes to the table while it reads it. On a very large
ledger, build them beforehand without that lock, with exactly these definitions, and the
upgrade finds them made (`IF NOT EXISTS`):

    CREATE INDEX CONCURRENTLY ix_ledger_transfers_moved ON ledger_transfers
        (created_at, id) WHERE kind IN ('posted', 'post_pending');
    CREATE INDEX CONCURRENTLY ix_provider_events_unmatched ON provider_events
        (outcome, received_at, id) WHERE outcome = 'unmatched' OR outcome = 'unmatched_settled';

Revision ID: 0028_journal_indexes
Revises: 0027_api_key_client
Create Date: 2026-12-11 09:50:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0028_journal_indexes"
down_revision: str | None = "0027_api_key_client"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PARTIAL = (
    (
        "ix_ledger_transfers_moved",
        "ledger_transfers",
        ["created_at", "id"],
        "kind IN ('posted', 'post_pending')",
    ),
    (
        "ix_provider_events_unmatched",
        "provider_events",
        ["outcome", "received_at", "id"],
        "outcome = 'unmatched' OR outcome = 'unmatched_settled'",
    ),
)


def upgrade() -> None:
    for name, table, columns, where in _PARTIAL:
        op.create_index(
            name,
            table,
            columns,
            postgresql_where=sa.text(where),
            sqlite_where=sa.text(where),
            if_not_exists=True,
        )


def downgrade() -> None:
    for name, table, *_ in _PARTIAL:
        op.drop_index(name, table_name=table)

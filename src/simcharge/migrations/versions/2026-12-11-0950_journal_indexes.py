"""The ledger's journal and the unmatched payment notifications, read through indexes.

`ix_ledger_transfers_created_brin` (`created_at`, BRIN, PostgreSQL only): the journal
(`GET /admin/ledger/transfers`) reads a period through it instead of the whole table. A BRIN
index keeps a summary per range of pages — transfers are written in time order, so a period is
a few ranges — costs the ledger's inserts next to nothing, and gives no order: a btree on
`created_at` (this migration's first form) let PostgreSQL answer the user center's "latest
10 transfers of these accounts" by walking every account's recent transfers newest first, and
the user center fell to half its speed. On SQLite (small installations) none: a period is
read by a scan, as before.

`ix_provider_events_unmatched` (`outcome`, `received_at`, `id`) holds the notifications that
matched no order, waiting (`unmatched`) or settled by hand (`unmatched_settled`), a few among
every notification ever received: their list (`/backoffice/attention/unmatched`,
`GET /admin/provider-events`) reads them newest first and counted them by a scan.

The second is partial: the queries write the condition as the index does (literal values), so
each plan can use it whatever the parameters (asyncpg prepares every statement: a generic plan
knows no parameter's value).

Built as the other migrations build theirs (in the migration's transaction; none is built
`CONCURRENTLY`): the build holds off writes to the table while it reads it. On a very large
ledger, build them beforehand without that lock, with exactly these definitions, and the
upgrade finds them made (`IF NOT EXISTS`):

    CREATE INDEX CONCURRENTLY ix_ledger_transfers_created_brin ON ledger_transfers
        USING brin (created_at);
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
        "ix_provider_events_unmatched",
        "provider_events",
        ["outcome", "received_at", "id"],
        "outcome = 'unmatched' OR outcome = 'unmatched_settled'",
    ),
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.create_index(
            "ix_ledger_transfers_created_brin",
            "ledger_transfers",
            ["created_at"],
            postgresql_using="brin",
            if_not_exists=True,
        )
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
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_ledger_transfers_created_brin", table_name="ledger_transfers")

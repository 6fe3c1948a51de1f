"""Accounts: the name as the back office's search compares it (`display_name_folded`).

The search ignored accents by folding every stored name in SQL at query time (PostgreSQL
`normalize(…, NFKD)` and a regular expression; on SQLite a Python function): five to nine times
slower than a plain `lower() LIKE` for names that are not ASCII, on every search, since a
substring has no index. The folded name is now kept beside the name, written with it
(`accounts.models.Account`: `@validates`, and bulk `update(Account)` statements), and the search
compares it as it is.

The upgrade adds the column and fills it with `kit.fold.fold` — Python's, the very function
that folds names written from now on and the query, so the two never disagree — reading the
accounts with a name in id order, a thousand at a time (`BATCH`), and writing each batch
in one `executemany`. Without a length: folding can lengthen a name ("ß" is "ss", a Hangul syllable its
two or three letters). Downgrade drops it (the search before it folded in SQL).

Revision ID: 0032_customer_search_fold
Revises: 0031_receipt_issued_at
Create Date: 2026-12-12 09:20:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from simcharge.kit.fold import fold

revision: str = "0032_customer_search_fold"
down_revision: str | None = "0031_receipt_issued_at"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 1000
"""Accounts folded per statement."""

_accounts = sa.table(
    "accounts",
    sa.column("id", sa.Uuid()),
    sa.column("display_name", sa.String()),
    sa.column("display_name_folded", sa.Text()),
)


def upgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("display_name_folded", sa.Text(), nullable=True))

    conn = op.get_bind()
    write = (
        sa.update(_accounts)
        .where(_accounts.c.id == sa.bindparam("account_id"))
        .values(display_name_folded=sa.bindparam("folded"))
    )
    after = None
    while True:
        read = (
            sa.select(_accounts.c.id, _accounts.c.display_name)
            .where(_accounts.c.display_name.is_not(None))
            .order_by(_accounts.c.id)
            .limit(BATCH)
        )
        if after is not None:
            read = read.where(_accounts.c.id > after)
        rows = conn.execute(read).all()
        if not rows:
            return
        conn.execute(write, [{"account_id": i, "folded": fold(name)} for i, name in rows])
        after = rows[-1][0]


def downgrade() -> None:
    # Not in batch mode: on SQLite that rebuilds `accounts`, whose drop fails while rows of
    # other tables point at it (foreign keys on); SQLite drops a plain column in place.
    op.drop_column("accounts", "display_name_folded")

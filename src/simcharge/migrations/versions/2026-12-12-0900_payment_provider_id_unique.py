"""A provider's payment id belongs to one payment.

`uq_payments_provider_payment_id` (`provider`, `payment_id`), unique where `payment_id` is set:
the payment id (Stripe payment intent, PayPal capture, Alipay trade_no, WeChat transaction) is
what refunds are asked against and what a refund or dispute notification names. Two of our
payments holding the same one would let a signed success event for one order be booked on
another (and a refund of one be taken for the other's). Applying a status now refuses one that
names another order's payment id (`orders.fulfilment.payment_id_holder`: nothing credited, its
notification kept `unmatched` for finance); this index makes the database refuse it too,
whatever path writes it.

Partial (`WHERE payment_id IS NOT NULL`) on both databases: most pending payments have none yet.

If rows already break it, the upgrade stops and names them; list them with

    SELECT provider, payment_id, count(*), array_agg(order_id)
      FROM payments WHERE payment_id IS NOT NULL
     GROUP BY provider, payment_id HAVING count(*) > 1;

(on SQLite `group_concat(order_id)`), settle them by hand (the provider's dashboard says which
order the payment is for; clear `payment_id` on the other), then upgrade again.

Built in the migration's transaction as the other migrations build theirs. On a large table,
build it beforehand without that lock, with exactly this definition, and the upgrade finds it
made (`IF NOT EXISTS`):

    CREATE UNIQUE INDEX CONCURRENTLY uq_payments_provider_payment_id ON payments
        (provider, payment_id) WHERE payment_id IS NOT NULL;

Revision ID: 0030_payment_provider_id_unique
Revises: 0029_usage_detail_retention
Create Date: 2026-12-12 09:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0030_payment_provider_id_unique"
down_revision: str | None = "0029_usage_detail_retention"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NAME = "uq_payments_provider_payment_id"
_WHERE = "payment_id IS NOT NULL"
_DUPLICATES = sa.text(
    "SELECT provider, payment_id, count(*) AS n FROM payments"
    " WHERE payment_id IS NOT NULL GROUP BY provider, payment_id HAVING count(*) > 1"
    " ORDER BY provider, payment_id LIMIT 10"
)


def _refuse_duplicates() -> None:
    """Stop with the duplicates named, rather than with the database's bare unique violation."""
    rows = op.get_bind().execute(_DUPLICATES).all()
    if rows:
        named = ", ".join(f"{r.provider} {r.payment_id} ({r.n} payments)" for r in rows)
        raise RuntimeError(
            f"{_NAME}: payments share a provider payment id: {named}. List them all with the"
            f" query in migration {revision}'s docstring; keep the id on the payment the"
            " provider says it belongs to, clear payment_id on the others (and review those"
            " orders), then upgrade again."
        )


def upgrade() -> None:
    _refuse_duplicates()
    op.create_index(
        _NAME,
        "payments",
        ["provider", "payment_id"],
        unique=True,
        postgresql_where=sa.text(_WHERE),
        sqlite_where=sa.text(_WHERE),
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_index(_NAME, table_name="payments")

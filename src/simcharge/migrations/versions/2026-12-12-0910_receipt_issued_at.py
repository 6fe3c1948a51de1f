"""Receipts and credit notes learn when they were issued: `orders.receipt_issued_at`,
`refunds.credit_note_issued_at` — the moment the number was taken, the document's date.

Until now a receipt printed its order's credit time and a credit note its refund's completion,
while their numbers were taken later (the worker's receipt job, the payer asking, a provider's
refund posted once its payment is known): numbers and dates went in different orders, and a
document numbered long after could land in a year already closed. From now on the number's year
and the printed date are the issue moment's (`orders.service.issue_receipt_number`,
`issue_credit_note`).

Backfilled so that no document issued already prints another date: a numbered receipt gets the
date it prints today — its order's `fulfilled_at`; for a payment finance put on the line's balance
(no `fulfilled_at`), the time of that transfer (`orders.service.applied_at`: its id is derived
from the order's, so it is looked up per order, a few rows), else `paid_at`, else `created_at`; a
numbered credit note gets its refund's `completed_at` (else `created_at`). Unnumbered ones stay
NULL and get their date when numbered.

Revision ID: 0031_receipt_issued_at
Revises: 0030_payment_provider_id_unique
Create Date: 2026-12-12 09:10:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import simcharge.db
from simcharge.kit.ids import derived_id

revision: str = "0031_receipt_issued_at"
down_revision: str | None = "0030_payment_provider_id_unique"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIME = simcharge.db.UTCDateTime(timezone=True)
_orders = sa.table(
    "orders",
    sa.column("id", sa.Uuid()),
    sa.column("state", sa.String()),
    sa.column("receipt_number", sa.String()),
    sa.column("receipt_issued_at", _TIME),
    sa.column("fulfilled_at", _TIME),
    sa.column("paid_at", _TIME),
    sa.column("created_at", _TIME),
)
_refunds = sa.table(
    "refunds",
    sa.column("credit_note_number", sa.String()),
    sa.column("credit_note_issued_at", _TIME),
    sa.column("completed_at", _TIME),
    sa.column("created_at", _TIME),
)
_transfers = sa.table(
    "ledger_transfers",
    sa.column("id", sa.Uuid()),
    sa.column("created_at", _TIME),
)
_MAY_BE_APPLIED = ("paid", "refunded")
"""As `orders.service._MAY_BE_APPLIED`: the states of an order finance may have applied."""


def _backfill_receipts() -> None:
    conn = op.get_bind()
    numbered = _orders.c.receipt_number.is_not(None)
    conn.execute(
        sa.update(_orders)
        .where(numbered, _orders.c.fulfilled_at.is_not(None))
        .values(receipt_issued_at=_orders.c.fulfilled_at)
    )
    others = conn.execute(
        sa.select(_orders.c.id, _orders.c.state, _orders.c.paid_at, _orders.c.created_at).where(
            numbered, _orders.c.fulfilled_at.is_(None)
        )
    ).all()
    for order_id, state, paid_at, created_at in others:
        applied = None
        if state in _MAY_BE_APPLIED:
            applied = conn.execute(
                sa.select(_transfers.c.created_at).where(
                    _transfers.c.id == derived_id(f"order:{order_id}", "applied")
                )
            ).scalar_one_or_none()
        conn.execute(
            sa.update(_orders)
            .where(_orders.c.id == order_id)
            .values(receipt_issued_at=applied or paid_at or created_at)
        )


def upgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("receipt_issued_at", _TIME, nullable=True))
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.add_column(sa.Column("credit_note_issued_at", _TIME, nullable=True))
    _backfill_receipts()
    op.get_bind().execute(
        sa.update(_refunds)
        .where(_refunds.c.credit_note_number.is_not(None))
        .values(
            credit_note_issued_at=sa.func.coalesce(_refunds.c.completed_at, _refunds.c.created_at)
        )
    )


def downgrade() -> None:
    # Not in batch mode: on SQLite that rebuilds the table, and dropping `orders` (or `refunds`)
    # is refused while rows refer to it (foreign keys are on). A plain column, no index nor
    # constraint: SQLite (3.35+) and PostgreSQL drop it in place.
    op.drop_column("refunds", "credit_note_issued_at")
    op.drop_column("orders", "receipt_issued_at")

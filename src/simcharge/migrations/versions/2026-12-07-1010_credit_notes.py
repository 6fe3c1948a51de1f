"""Credit notes: a refund gets a document of its own, numbered `C<year>-<6 digits>` per year
(`refunds.credit_note_number`, counted in `receipt_counters` as `credit_note:<year>`), kept per
language (`credit_note_documents`); the receipt stays as it was issued.

Revision ID: 0015_credit_notes
Revises: 0014_api_key_expiry
Create Date: 2026-12-07 10:10:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import simcharge.db

revision: str = "0015_credit_notes"
down_revision: str | None = "0014_api_key_expiry"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.add_column(sa.Column("credit_note_number", sa.String(length=24), nullable=True))
        batch_op.create_unique_constraint(
            batch_op.f("uq_refunds_credit_note_number"), ["credit_note_number"]
        )
    op.create_table(
        "credit_note_documents",
        sa.Column("refund_id", sa.Uuid(), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("pdf", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", simcharge.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["refund_id"], ["refunds.id"], name=op.f("fk_credit_note_documents_refund_id_refunds")
        ),
        sa.PrimaryKeyConstraint("refund_id", "language", name=op.f("pk_credit_note_documents")),
    )


def downgrade() -> None:
    op.drop_table("credit_note_documents")
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_refunds_credit_note_number"), type_="unique")
        batch_op.drop_column("credit_note_number")

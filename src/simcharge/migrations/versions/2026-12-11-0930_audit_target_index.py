"""The audit log by target id alone (`ix_audit_entries_target_id`: `target_id`, `at`).

The back office's "its trail" links and the audit page's target filter give a target's id
without its type; the `(target_type, target_id, at)` index cannot serve a filter that does not
start with `target_type`, so such a filter read the whole log. This index serves it, newest
first (the log is kept for ever and only grows).

Revision ID: 0026_audit_target_index
Revises: 0025_adjustment_note
Create Date: 2026-12-11 09:30:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0026_audit_target_index"
down_revision: str | None = "0025_adjustment_note"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_audit_entries_target_id", "audit_entries", ["target_id", "at"])


def downgrade() -> None:
    op.drop_index("ix_audit_entries_target_id", table_name="audit_entries")

"""Lines: since when their account holds them (`attached_at`).

A line belongs to its number: when its holder closes their account it is detached with its
balance, and whoever holds the SIM adds it to an account again. What the line did before that —
the previous holder's transfers (with their receivers' numbers and reasons), top-ups and usage —
is not the new holder's to read. Each attached line gets the time of its latest successful
`line_attached` security event for its account (the SMS code confirmed, or the verified own
number), or, without one, the line's creation (a line created attached: the demo, imports).

Revision ID: 0024_line_attached_at
Revises: 0023_audit_contacts_removed
Create Date: 2026-12-11 09:10:00+00:00
"""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

import simcharge.db

revision: str = "0024_line_attached_at"
down_revision: str | None = "0023_audit_contacts_removed"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(JSONB(), "postgresql")
_TIME = simcharge.db.UTCDateTime(timezone=True)
_lines = sa.table(
    "lines",
    sa.column("id", sa.Uuid()),
    sa.column("msisdn", sa.String()),
    sa.column("account_id", sa.Uuid()),
    sa.column("attached_at", _TIME),
    sa.column("created_at", _TIME),
)
_events = sa.table(
    "security_events",
    sa.column("account_id", sa.Uuid()),
    sa.column("kind", sa.String()),
    sa.column("success", sa.Boolean()),
    sa.column("details", _JSON),
    sa.column("created_at", _TIME),
)


def upgrade() -> None:
    with op.batch_alter_table("lines", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attached_at", _TIME, nullable=True))

    conn = op.get_bind()
    held = conn.execute(
        sa.select(_lines.c.id, _lines.c.msisdn, _lines.c.account_id, _lines.c.created_at).where(
            _lines.c.account_id.is_not(None)
        )
    ).all()
    if not held:
        return
    latest: dict[tuple[Any, str], datetime] = {}
    for account_id, details, at in conn.execute(
        sa.select(_events.c.account_id, _events.c.details, _events.c.created_at).where(
            _events.c.kind == "line_attached", _events.c.success.is_(True)
        )
    ):
        facts = details if isinstance(details, dict) else {}
        for key in (str(facts.get("line_id") or ""), str(facts.get("msisdn") or "")):
            seen = latest.get((account_id, key))
            if key and (seen is None or at > seen):
                latest[(account_id, key)] = at
    for line_id, msisdn, account_id, created_at in held:
        since = latest.get((account_id, str(line_id))) or latest.get((account_id, msisdn))
        conn.execute(
            sa.update(_lines)
            .where(_lines.c.id == line_id)
            .values(attached_at=since or created_at)
        )


def downgrade() -> None:
    with op.batch_alter_table("lines", schema=None) as batch_op:
        batch_op.drop_column("attached_at")

"""The audit's older rows lose the customers' contact details they kept.

Before the twelfth round a customer search kept what staff typed (`details.q`: often an e-mail
address or a phone number), an order list by number kept the number (`details.msisdn`), and
adjustments and unfreezes kept the line's number beside its id. The audit is kept for ever,
and a closed account promises that none of its contacts are kept, so these rows are rewritten
once, here, to what the application has written since: a search keeps the kind of thing typed
and its length, an order list the line's id (or only that a number of no line was typed), an
adjustment or an unfreeze no number. The accounts a search showed were not recorded then and
cannot be known now (`accounts` is absent; `found` stays).

The table refuses `UPDATE` (a trigger on both databases); this migration, run by the tables'
owner, lifts that trigger for its own transaction only and puts it back. Nothing else in the
row changes. There is nothing to put back on downgrade: the words typed are gone on purpose.

Revision ID: 0023_audit_contacts_removed
Revises: 0022_customer_second_factor
Create Date: 2026-12-11 09:00:00+00:00
"""

import unicodedata
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0023_audit_contacts_removed"
down_revision: str | None = "0022_customer_second_factor"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(JSONB(), "postgresql")
_audit = sa.table(
    "audit_entries",
    sa.column("id", sa.Uuid()),
    sa.column("action", sa.String()),
    sa.column("details", _JSON),
)
_lines = sa.table("lines", sa.column("id", sa.Uuid()), sa.column("msisdn", sa.String()))

NUMBER_DIGITS = 5
"""A query with this many digits or more was a number (a phone, an MSISDN, an ICCID): the
application's own test (`backoffice.customers.search_facts`) parses it as a phone number,
which a migration must not depend on; counting digits says the same for what staff type."""

NAMED_BY_LINE = ("adjustment.request", "adjustment.apply", "line.unfreeze")


def _query_kind(q: str) -> str:
    if "@" in q:
        return "email"
    try:
        uuid.UUID(q)
    except ValueError:
        pass
    else:
        return "id"
    return "number" if sum(c.isdigit() for c in q) >= NUMBER_DIGITS else "text"


def search_details(details: dict[str, Any]) -> dict[str, Any]:
    """A search's details as written since: kind and length of the query, never the query."""
    q = unicodedata.normalize("NFKC", str(details.get("q") or "").replace("\x00", "")).strip()
    kept = {k: v for k, v in details.items() if k != "q"}
    return {**kept, "kind": _query_kind(q), "length": len(q)}


def _rewritten(conn: sa.Connection, action: str, details: dict[str, Any]) -> dict[str, Any] | None:
    if action == "customer.search" and "q" in details:
        return search_details(details)
    if action == "order.list" and "msisdn" in details:
        msisdn = details["msisdn"]
        kept = {k: v for k, v in details.items() if k != "msisdn"}
        if not msisdn:
            return kept
        line_id = conn.execute(
            sa.select(_lines.c.id).where(_lines.c.msisdn == str(msisdn))
        ).scalar_one_or_none()
        if line_id is not None:
            return {**kept, "line": str(line_id), "number": False}
        return {**kept, "number": True}
    if action in NAMED_BY_LINE and "msisdn" in details:
        return {k: v for k, v in details.items() if k != "msisdn"}
    return None


def upgrade() -> None:
    conn = op.get_bind()
    postgres = conn.dialect.name == "postgresql"
    rows = conn.execute(
        sa.select(_audit.c.id, _audit.c.action, _audit.c.details).where(
            _audit.c.action.in_(("customer.search", "order.list", *NAMED_BY_LINE))
        )
    ).all()
    changes = []
    for row in rows:
        details = row.details if isinstance(row.details, dict) else None
        if details is None:
            continue
        new = _rewritten(conn, row.action, details)
        if new is not None:
            changes.append((row.id, new))
    if not changes:
        return
    if postgres:
        op.execute("ALTER TABLE audit_entries DISABLE TRIGGER audit_entries_append_only")
    else:
        op.execute("DROP TRIGGER audit_entries_no_update")
    for entry_id, new in changes:
        conn.execute(sa.update(_audit).where(_audit.c.id == entry_id).values(details=new))
    if postgres:
        op.execute("ALTER TABLE audit_entries ENABLE TRIGGER audit_entries_append_only")
    else:
        op.execute(
            "CREATE TRIGGER audit_entries_no_update BEFORE UPDATE ON audit_entries "
            "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"
        )


def downgrade() -> None:
    """The words typed are not kept anywhere to put back."""

"""Charging sessions keep their answers by sequence number (the create's and the latest
updates'), instead of only the last one: a late retransmitted create got a later answer.

Revision ID: 0007_charging
Revises: 0006_backoffice
Create Date: 2026-12-05 14:37:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import simcharge.db

revision: str = "0007_charging"
down_revision: str | None = "0006_backoffice"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_sessions = sa.table(
    "charging_sessions",
    sa.column("id", sa.Uuid()),
    sa.column("sequence", sa.BigInteger()),
    sa.column("state", sa.String()),
    sa.column("request_hash", sa.String()),
    sa.column("last_response", simcharge.db.JSONType),
    sa.column("answers", simcharge.db.JSONType),
    sa.column("created_at", simcharge.db.UTCDateTime(timezone=True)),
    sa.column("updated_at", simcharge.db.UTCDateTime(timezone=True)),
)


def upgrade() -> None:
    with op.batch_alter_table("charging_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("answers", simcharge.db.JSONType, nullable=True))
    # The last answer is all an existing session kept: it stays answerable (a release's
    # answer has no body; a session never updated still has its create's). The create's
    # answer of a session already updated is lost: a retransmitted create then gets its
    # resource's creation time and its own sequence number, without the quota (nchf.py).
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(
            _sessions.c.id,
            _sessions.c.sequence,
            _sessions.c.request_hash,
            _sessions.c.last_response,
            _sessions.c.created_at,
            _sessions.c.updated_at,
        )
    ).all()
    for row in rows:
        if not row.last_response:
            op_name = "release"
        elif row.created_at == row.updated_at:
            op_name = "create"
        else:
            op_name = "update"
        answers = {
            str(row.sequence): {
                "op": op_name,
                "hash": row.request_hash,
                "body": row.last_response or None,
            }
        }
        conn.execute(
            _sessions.update().where(_sessions.c.id == row.id).values(answers=answers)
        )
    with op.batch_alter_table("charging_sessions", schema=None) as batch_op:
        batch_op.alter_column("answers", existing_type=simcharge.db.JSONType, nullable=False)
        batch_op.drop_column("last_response")
        batch_op.drop_column("request_hash")


def downgrade() -> None:
    with op.batch_alter_table("charging_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("request_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("last_response", simcharge.db.JSONType, nullable=True))
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(_sessions.c.id, _sessions.c.sequence, _sessions.c.answers)
    ).all()
    for row in rows:
        last = (row.answers or {}).get(str(row.sequence)) or {}
        conn.execute(
            _sessions.update()
            .where(_sessions.c.id == row.id)
            .values(request_hash=last.get("hash", ""), last_response=last.get("body") or {})
        )
    with op.batch_alter_table("charging_sessions", schema=None) as batch_op:
        batch_op.alter_column("request_hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column(
            "last_response", existing_type=simcharge.db.JSONType, nullable=False
        )
        batch_op.drop_column("answers")

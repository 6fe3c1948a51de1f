"""API keys: the client that holds them across rotations (`client_id`).

Each key gets the id of the first key of its rotation chain, as the rotations' audit entries
(`apikey.rotate`, `after.replaced_by`) recorded the chain; a key no rotation made gets its own
id. Open charging sessions were owned by the key's prefix: they are rewritten to the client id,
so that the successor of a rotated key goes on with them. (Balance actions keep the key that
made them: TMF654 idempotency matches any key of the client, see `tmf654.service.replay`.)

Revision ID: 0027_api_key_client
Revises: 0026_audit_target_index
Create Date: 2026-12-11 09:40:00+00:00
"""

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0027_api_key_client"
down_revision: str | None = "0026_audit_target_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(JSONB(), "postgresql")
_keys = sa.table(
    "api_keys",
    sa.column("id", sa.Uuid()),
    sa.column("prefix", sa.String()),
    sa.column("client_id", sa.Uuid()),
    sa.column("created_at", sa.DateTime()),
    sa.column("revoked_at", sa.DateTime()),
    sa.column("expires_at", sa.DateTime()),
)
_audit = sa.table(
    "audit_entries",
    sa.column("action", sa.String()),
    sa.column("target_type", sa.String()),
    sa.column("target_id", sa.String()),
    sa.column("after", _JSON),
    sa.column("at", sa.DateTime()),
)
_sessions = sa.table(
    "charging_sessions",
    sa.column("client", sa.String()),
    sa.column("state", sa.String()),
)


def _predecessors(conn: sa.Connection) -> dict[str, str]:
    """New prefix → the prefix it replaced, as the rotations recorded them. A key is made by
    one rotation at most, so each new key has one predecessor — also where the command line
    rotated one key twice during its overlap (two successors of one key: both its chain's)."""
    found: dict[str, str] = {}
    rows = conn.execute(
        sa.select(_audit.c.target_id, _audit.c.after)
        .where(_audit.c.action == "apikey.rotate", _audit.c.target_type == "api_key")
        .order_by(_audit.c.at)
    )
    for old, after in rows:
        facts: Any = json.loads(after) if isinstance(after, str) else after
        new = facts.get("replaced_by") if isinstance(facts, dict) else None
        if isinstance(old, str) and isinstance(new, str) and new != old:
            found.setdefault(new, old)
    return found


def _root(prefix: str, before: dict[str, str], keys: dict[str, uuid.UUID]) -> str:
    """The first key of `prefix`'s chain: its predecessors followed while they exist (a loop,
    which the product never makes, stops where it closes)."""
    seen = {prefix}
    while before.get(prefix) in keys and before[prefix] not in seen:
        prefix = before[prefix]
        seen.add(prefix)
    return prefix


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("client_id", sa.Uuid(), nullable=True))

    conn = op.get_bind()
    keys: dict[str, uuid.UUID] = {
        prefix: key_id for key_id, prefix in conn.execute(sa.select(_keys.c.id, _keys.c.prefix))
    }
    before = _predecessors(conn)
    for prefix in keys:
        client = keys[_root(prefix, before, keys)]
        conn.execute(sa.update(_keys).where(_keys.c.prefix == prefix).values(client_id=client))
        conn.execute(
            sa.update(_sessions)
            .where(_sessions.c.client == prefix, _sessions.c.state == "open")
            .values(client=str(client))
        )

    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.alter_column("client_id", existing_type=sa.Uuid(), nullable=False)
        batch_op.create_index("ix_api_keys_client_id", ["client_id"], unique=False)


def _naive_utc(moment: datetime | None) -> datetime | None:
    """A moment as SQLite gives it back (naive UTC), whatever the driver handed over."""
    if moment is None or moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def downgrade() -> None:
    conn = op.get_bind()
    # Each client's open sessions go back to its newest live key (else its newest key): the one
    # that goes on calling. (A session created after the upgrade keeps its id, derived from the
    # client: a retransmitted create of it, after the downgrade, would open another one.)
    now = _naive_utc(datetime.now(UTC))
    newest: dict[str, tuple[bool, str]] = {}
    for client, prefix, revoked_at, expires_at in conn.execute(
        sa.select(_keys.c.client_id, _keys.c.prefix, _keys.c.revoked_at, _keys.c.expires_at)
        .order_by(_keys.c.created_at)
    ):
        ends = _naive_utc(expires_at)
        live = revoked_at is None and (ends is None or (now is not None and ends > now))
        if live or not newest.get(str(client), (False, ""))[0]:
            newest[str(client)] = (live, prefix)
    for client, (_, prefix) in newest.items():
        conn.execute(
            sa.update(_sessions)
            .where(_sessions.c.client == client, _sessions.c.state == "open")
            .values(client=prefix)
        )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_index("ix_api_keys_client_id")
        batch_op.drop_column("client_id")

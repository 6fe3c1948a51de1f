"""Data retention: the indexes the retention sweep's rules scan (`accounts.retention`), one
range of old rows per batch instead of the whole table each time. The partial ones hold only
the rows still to anonymise: a security event with its address or device, a payment
notification with its raw body.

Revision ID: 0018_retention
Revises: 0017_passkeys
Create Date: 2026-12-08 09:20:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018_retention"
down_revision: str | None = "0017_passkeys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PLAIN = (
    ("ix_security_events_created_at", "security_events", "created_at"),
    ("ix_auth_sessions_expires_at", "auth_sessions", "expires_at"),
    ("ix_staff_sessions_expires_at", "staff_sessions", "expires_at"),
    ("ix_verification_codes_expires_at", "verification_codes", "expires_at"),
    ("ix_known_devices_last_seen_at", "known_devices", "last_seen_at"),
    ("ix_login_throttles_updated_at", "login_throttles", "updated_at"),
    ("ix_message_log_created_at", "message_log", "created_at"),
    ("ix_notices_created_at", "notices", "created_at"),
    ("ix_idempotency_keys_created_at", "idempotency_keys", "created_at"),
    ("ix_charging_sessions_created_at", "charging_sessions", "created_at"),
)
_PARTIAL = (
    (
        "ix_security_events_identified",
        "security_events",
        "created_at",
        "ip IS NOT NULL OR user_agent IS NOT NULL",
    ),
    ("ix_provider_events_raw_kept", "provider_events", "received_at", "headers IS NOT NULL"),
)


def upgrade() -> None:
    for name, table, column in _PLAIN:
        op.create_index(name, table, [column])
    for name, table, column, where in _PARTIAL:
        op.create_index(
            name,
            table,
            [column],
            postgresql_where=sa.text(where),
            sqlite_where=sa.text(where),
        )


def downgrade() -> None:
    for name, table, *_ in _PARTIAL:
        op.drop_index(name, table_name=table)
    for name, table, _ in _PLAIN:
        op.drop_index(name, table_name=table)

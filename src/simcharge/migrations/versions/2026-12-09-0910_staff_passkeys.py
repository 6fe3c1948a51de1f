"""Staff passkeys and time zones: placeholder (staff helper).

Revision ID: 0020_staff_passkeys
Revises: 0019_api_key_request
Create Date: 2026-12-09 09:10:00+00:00
"""

from collections.abc import Sequence

revision: str = "0020_staff_passkeys"
down_revision: str | None = "0019_api_key_request"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass

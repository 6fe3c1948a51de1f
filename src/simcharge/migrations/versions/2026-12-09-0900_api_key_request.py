"""API keys: placeholder (back office forms helper).

Revision ID: 0019_api_key_request
Revises: 0018_retention
Create Date: 2026-12-09 09:00:00+00:00
"""

from collections.abc import Sequence

revision: str = "0019_api_key_request"
down_revision: str | None = "0018_retention"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass

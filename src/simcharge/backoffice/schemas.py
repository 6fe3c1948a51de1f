"""What the admin API takes and shows."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class StaffLoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(max_length=64)
    password: str = Field(max_length=256)
    code: str = Field(max_length=12, description="The current code of the authenticator app")


class StaffTokenOut(BaseModel):
    token: str
    expires_at: datetime
    username: str
    role: str
    permissions: list[str]


class AuditEntryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    at: datetime
    actor: str
    action: str
    target_type: str | None
    target_id: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    details: dict[str, Any]
    ip: str | None
    user_agent: str | None


class CheckOut(BaseModel):
    outcome: str
    """`fulfilled` (paid: credited now), `already`, `flagged`, `closed` or `unchanged`."""
    state: str
    attention: str | None

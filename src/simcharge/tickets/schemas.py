"""Tickets as the customer and the staff see them."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class TicketIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subject: str = Field(max_length=200)
    body: str = Field(max_length=10_000)
    order_id: uuid.UUID | None = Field(default=None, description="One of my orders")
    line_id: uuid.UUID | None = Field(default=None, description="One of my lines")


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    body: str = Field(max_length=10_000)


class MessageOut(BaseModel):
    id: uuid.UUID
    author: str
    """`customer` or `staff`."""
    body: str
    created_at: datetime


class TicketOut(BaseModel):
    id: uuid.UUID
    number: str
    subject: str
    status: str
    order_id: uuid.UUID | None
    line_id: uuid.UUID | None
    created_at: datetime
    updated_at: datetime


class TicketDetailOut(TicketOut):
    messages: list[MessageOut]


class StaffMessageOut(MessageOut):
    internal: bool
    staff: str | None


class StaffTicketOut(TicketOut):
    account_id: uuid.UUID
    priority: str
    assignee: str | None
    redacted_at: datetime | None = Field(
        description="When the retention sweep emptied its subject and messages (two years after "
        "its account was closed); null: never"
    )


class StaffTicketDetailOut(StaffTicketOut):
    messages: list[StaffMessageOut]


class StaffReplyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    body: str = Field(max_length=10_000)
    internal: bool = Field(default=False, description="A note between staff, not sent")
    status: str | None = Field(default=None, description="Status after the reply")


class TicketUpdateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: str | None = None
    priority: str | None = None
    assignee: str | None = Field(default=None, description="A staff username; empty string: nobody")

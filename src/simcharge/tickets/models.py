"""Customer-service conversations: a ticket and its messages."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from simcharge.db import Base
from simcharge.kit.clock import utcnow
from simcharge.kit.ids import uuid7


class TicketStatus(StrEnum):
    open = "open"
    """Waiting for customer service."""
    waiting_on_customer = "waiting_on_customer"
    """Customer service answered or asked something; the customer's reply reopens it."""
    resolved = "resolved"
    """Customer service considers it solved; a customer's reply reopens it."""
    closed = "closed"
    """Over: no more replies."""


class TicketPriority(StrEnum):
    low = "low"
    normal = "normal"
    high = "high"
    urgent = "urgent"


class Ticket(Base):
    __tablename__ = "tickets"
    __table_args__ = (
        Index("ix_tickets_account_id", "account_id", "updated_at"),
        Index("ix_tickets_status", "status", "updated_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    number: Mapped[str] = mapped_column(String(16), unique=True)
    """What the customer and staff call it: `T-` and 8 characters."""
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"))
    subject: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(24), default=TicketStatus.open.value)
    priority: Mapped[str] = mapped_column(String(8), default=TicketPriority.normal.value)
    order_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("orders.id"))
    line_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("lines.id"))
    assignee_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("staff_users.id"))
    request_key: Mapped[str | None] = mapped_column(String(180), unique=True)
    """`<account>:<Idempotency-Key>` of the request that opened it: a retry opens nothing new."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    """The last change the customer can see: a message of theirs, a reply, a new status (not an
    internal note, a priority or an assignee). Orders both the customer's list and the queue."""
    redacted_at: Mapped[datetime | None] = mapped_column()
    """When the retention sweep removed its subject and its messages' text, its account closed
    long enough (`SIMCHARGE_RETENTION_CLOSED_TICKETS_DAYS`); staff screens say so."""


class TicketMessage(Base):
    __tablename__ = "ticket_messages"
    __table_args__ = (Index("ix_ticket_messages_ticket_id", "ticket_id", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    ticket_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tickets.id"))
    author: Mapped[str] = mapped_column(String(8))
    """`customer` or `staff`."""
    staff_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("staff_users.id"))
    body: Mapped[str] = mapped_column(Text)
    internal: Mapped[bool] = mapped_column(default=False)
    """A note between staff: never shown to the customer."""
    request_key: Mapped[str | None] = mapped_column(String(180), unique=True)
    """`<account>:<Idempotency-Key>` of a customer's reply, `staff:<staff id>:<key>` (or
    `apikey:<prefix>:<key>`) of a staff reply or note: a retry writes nothing new."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

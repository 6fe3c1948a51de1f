"""The outbox: jobs written in the same transaction as the change that causes them."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from simcharge.db import Base
from simcharge.kit.clock import utcnow
from simcharge.kit.ids import uuid7


class JobStatus(StrEnum):
    pending = "pending"
    """Waiting for `run_at`."""
    running = "running"
    """Claimed by a worker until `locked_until`; back to the queue if that worker dies."""
    done = "done"
    dead = "dead"
    """Failed `max_attempts` times; shown to staff, retried only by hand."""


class OutboxJob(Base):
    __tablename__ = "outbox_jobs"
    __table_args__ = (
        Index(
            "ix_outbox_jobs_due",
            "run_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        Index(
            "ix_outbox_jobs_leased",
            "locked_until",
            postgresql_where=text("status = 'running'"),
            sqlite_where=text("status = 'running'"),
        ),
        Index("ix_outbox_jobs_status_finished", "status", "finished_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """Ids and small values only, never objects or secrets."""
    status: Mapped[str] = mapped_column(String(8), default=JobStatus.pending.value)
    run_at: Mapped[datetime] = mapped_column(default=utcnow)
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=10)
    last_error: Mapped[str | None] = mapped_column(Text)
    locked_by: Mapped[str | None] = mapped_column(String(64))
    locked_until: Mapped[datetime | None] = mapped_column()
    dedupe_key: Mapped[str | None] = mapped_column(String(160), unique=True)
    """Enqueueing the same key twice makes one job (periodic slots, one-off effects)."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()
    payload_removed_at: Mapped[datetime | None] = mapped_column()
    """When the retention sweep took the personal data out of a dead job's payload
    (`SIMCHARGE_RETENTION_DEAD_JOBS_DAYS`): such a job can no longer be retried."""

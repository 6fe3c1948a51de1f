"""What the lifecycle keeps: each line's state changes, and how far the warning passes got.

The indexes on `lines` and `buckets` serve the sweep's set-based queries (one range scan per
rule, whatever the number of lines); they are declared here, with the rules that use them."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from simcharge.db import Base
from simcharge.kit.clock import utcnow
from simcharge.kit.ids import uuid7
from simcharge.lines.models import Bucket, Line

_lines = Line.__table__.c
_buckets = Bucket.__table__.c

Index("ix_lines_state_validity_end", _lines.state, _lines.validity_end)
Index("ix_lines_state_last_activity_at", _lines.state, _lines.last_activity_at)
Index("ix_lines_state_state_changed_at", _lines.state, _lines.state_changed_at)
Index("ix_buckets_expires_at", _buckets.expires_at)


class LineEvent(Base):
    """One change of a line's state: when, from what to what, why and by whom."""

    __tablename__ = "line_events"
    __table_args__ = (Index("ix_line_events_line_id", "line_id", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    line_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("lines.id"))
    from_state: Mapped[str] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(255))
    """`validity_ended`, `grace_over`, `inactive`, `frozen_too_long`, `topup`, `support: …`."""
    actor: Mapped[str] = mapped_column(String(120))
    """`sweep`, `order:<id>`, `staff:<who>`."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LifecycleMark(Base):
    """How far a warning pass has gone: every line whose warning time is at or before
    (`at`, `last_id`) has been warned. One row per pass; locked while the pass runs."""

    __tablename__ = "lifecycle_marks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    at: Mapped[datetime] = mapped_column()
    last_id: Mapped[uuid.UUID | None] = mapped_column()

"""Tariffs, usage records and real-time charging sessions."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Index, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from simcharge.db import Base
from simcharge.kit.clock import utcnow


class Service(StrEnum):
    voice = "voice"
    data = "data"
    sms = "sms"


UNIT_OF = {Service.voice: "VOICE_S", Service.data: "DATA_B", Service.sms: "SMS"}


class Tariff(Base):
    """The price of one service in one zone for wallets of one currency (loaded with the catalog).

    Usage is rounded up to `first_increment`, then to multiples of `next_increment` (native
    units: seconds, bytes, messages); what the wallet pays is `price` per `per_units`, rounded
    up to the minor unit, and at least `minimum`."""

    __tablename__ = "tariffs"
    __table_args__ = (UniqueConstraint("service", "zone", "currency"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    service: Mapped[str] = mapped_column(String(8))
    zone: Mapped[str] = mapped_column(String(32))
    currency: Mapped[str] = mapped_column(String(3))
    price: Mapped[int] = mapped_column()
    """Minor units per `per_units`."""
    per_units: Mapped[int] = mapped_column()
    first_increment: Mapped[int] = mapped_column()
    next_increment: Mapped[int] = mapped_column()
    minimum: Mapped[int] = mapped_column(default=0)
    version: Mapped[int] = mapped_column(default=1)
    """Raised each time a catalog load (or the back office) changes it; `tariff_versions` keeps
    every version with when it was in force."""
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class TariffVersion(Base):
    """One version of a tariff and when it was in force (`valid_until` empty: it still is).

    Usage records carry their service, zone, currency and when they were rated; the version in
    force then is the tariff they were charged at (a process's rating cache may lag a change by
    `SIMCHARGE_CHARGING_RATING_CACHE_SECONDS`)."""

    __tablename__ = "tariff_versions"
    __table_args__ = (
        UniqueConstraint("service", "zone", "currency", "version"),
        Index("ix_tariff_versions_valid_from", "service", "zone", "currency", "valid_from"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    service: Mapped[str] = mapped_column(String(8))
    zone: Mapped[str] = mapped_column(String(32))
    currency: Mapped[str] = mapped_column(String(3))
    version: Mapped[int] = mapped_column()
    price: Mapped[int] = mapped_column()
    per_units: Mapped[int] = mapped_column()
    first_increment: Mapped[int] = mapped_column()
    next_increment: Mapped[int] = mapped_column()
    minimum: Mapped[int] = mapped_column()
    valid_from: Mapped[datetime] = mapped_column()
    valid_until: Mapped[datetime | None] = mapped_column()


class UsageRecord(Base):
    """One rated usage (a call, a data session's report, a message): what it took from where.

    Its id derives from where it came from (`batch` + the record's id, or the charging
    session, sequence number and rating group), so the same usage is never charged twice."""

    __tablename__ = "usage_records"
    __table_args__ = (Index("ix_usage_records_line_id", "line_id", "started_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(8))
    """`batch` or `nchf`."""
    external_id: Mapped[str] = mapped_column(String(128))
    """The record's id in its file or API batch; for Nchf `<ChargingDataRef>/<seq>/<rating group>`."""
    line_id: Mapped[uuid.UUID] = mapped_column()
    service: Mapped[str] = mapped_column(String(8))
    country: Mapped[str | None] = mapped_column(String(2))
    zone: Mapped[str] = mapped_column(String(32))
    quantity: Mapped[int] = mapped_column()
    """As used: seconds, bytes or messages."""
    rated: Mapped[int] = mapped_column()
    """After rounding (native units): what was to be paid for."""
    from_buckets: Mapped[int] = mapped_column()
    """Native units taken from buckets."""
    from_wallet: Mapped[int] = mapped_column()
    """Native units paid from the wallet…"""
    charge: Mapped[int] = mapped_column()
    """… and what they cost, in the wallet's minor units."""
    currency: Mapped[str] = mapped_column(String(3))
    unbilled: Mapped[int] = mapped_column()
    """Native units that nothing could pay for (offline usage beyond the balance, or used
    beyond an online grant): recorded, not charged."""
    taken: Mapped[list[Any]] = mapped_column()
    """`[[ledger account id, amount], …]` in the order taken: buckets (units), then the wallet
    (money)."""
    session_id: Mapped[uuid.UUID | None] = mapped_column()
    started_at: Mapped[datetime] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SessionState(StrEnum):
    open = "open"
    """Quota may be granted and reported."""
    released = "released"
    """Closed by the network (release), or a one-time event charged at once."""
    timed_out = "timed_out"
    """Abandoned: no report before its deadline; its reservations were released."""
    ended = "ended"
    """Its line was terminated: its reservations were released before what the line held was
    forfeited."""


class ChargingSession(Base):
    """A charging data resource of Nchf_ConvergedCharging (its id is the ChargingDataRef).

    `groups` keeps, per rating group, what was used so far and the reservations (pending ledger
    transfers) that back the quota granted now; `answers`, what each request was answered (a
    retransmission gets the same answer again)."""

    __tablename__ = "charging_sessions"
    __table_args__ = (
        Index(
            "ix_charging_sessions_open_deadline",
            "deadline",
            postgresql_where=text("state = 'open'"),
            sqlite_where=text("state = 'open'"),
        ),
        Index("ix_charging_sessions_line_id", "line_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    line_id: Mapped[uuid.UUID] = mapped_column()
    client: Mapped[str] = mapped_column(String(64))
    """The API key (prefix) of the network function that opened it."""
    subscriber: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(10), default=SessionState.open.value)
    zone: Mapped[str | None] = mapped_column(String(32))
    country: Mapped[str | None] = mapped_column(String(2))
    sequence: Mapped[int] = mapped_column()
    """The last invocationSequenceNumber answered."""
    answers: Mapped[dict[str, Any]] = mapped_column()
    """What was answered, by invocationSequenceNumber: `{"<seq>": {"op": "create" | "update" |
    "release", "hash": <the request's SHA-256>, "body": <the answer's body or null>}}` — the
    create's answer always, and those of the latest `nchf.ANSWERS_KEPT` updates and releases."""
    groups: Mapped[dict[str, Any]] = mapped_column()
    deadline: Mapped[datetime] = mapped_column()
    """Without a report by then, the session is abandoned and its reservations released."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

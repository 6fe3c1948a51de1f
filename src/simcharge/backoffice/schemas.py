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


class CustomerOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    username: str
    display_name: str | None
    email: str | None
    phone: str | None
    status: str
    language: str
    created_at: datetime


class SearchMatchOut(BaseModel):
    """What a search matched besides the customer's name or contacts."""

    kind: str = Field(description="`order`, `ticket` or `line`")
    id: uuid.UUID
    label: str = Field(description="The order's reference, the ticket's number, the line's number")


class CustomerFoundOut(CustomerOut):
    matched: list[SearchMatchOut] = Field(
        description="The customer's orders (by id, reference, receipt number, a provider's "
        "payment or refund reference), tickets (id, number) or lines (id, number, ICCID) the "
        "query named, as the back office's search page shows them; empty when the customer was "
        "found by name or contact"
    )


class CustomerViewOut(BaseModel):
    """Everything about a customer (the back office's customer page)."""

    account: CustomerOut
    lines: list[dict[str, Any]]
    orders: list[dict[str, Any]]
    sessions: list[dict[str, Any]]
    security_events: list[dict[str, Any]]
    notices: list[dict[str, Any]]
    messages: list[dict[str, Any]]
    tickets: list[dict[str, Any]] = Field(
        description="The latest 50, latest activity first; all of them: "
        "`GET /admin/tickets?account_id=`"
    )
    tickets_total: int = Field(description="How many tickets the customer has")
    adjustments: list[dict[str, Any]]


class AdjustmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: str = Field(
        default="wallet", max_length=64, description='"wallet" or the id of one of its buckets'
    )
    amount: int = Field(
        ge=-(10**12),
        le=10**12,
        description="Signed, in ledger units: minor units of the wallet's currency, seconds, "
        "bytes or messages; negative takes back",
    )
    reason: str = Field(max_length=500)
    ticket_id: uuid.UUID | None = None


class AdjustmentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    line_id: uuid.UUID
    ledger_account_id: uuid.UUID
    unit: str
    amount: int
    reason: str
    state: str
    """`awaiting_approval` (above the threshold), `applied` or `rejected`."""
    requested_by: str
    decided_by: str | None
    transfer_id: uuid.UUID | None
    created_at: datetime
    decided_at: datetime | None


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    approve: bool


class NoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field(max_length=500, description="How it was settled")


class StateOut(BaseModel):
    id: uuid.UUID
    state: str


class StaffOut(BaseModel):
    id: uuid.UUID
    username: str
    display_name: str
    role: str
    active: bool
    totp_enrolled: bool
    last_login_at: datetime | None
    password_set_by_other_at: datetime | None = Field(
        description="When someone else (an admin) set this member's password; until they change "
        "it they reach only the password change, and it signs in for "
        "SIMCHARGE_STAFF_RESET_PASSWORD_HOURS. Null: their own password."
    )
    time_zone: str | None = Field(
        description="The IANA zone the back office writes their times in; null: the operator's"
    )
    passkey_count: int = Field(description="How many passkeys they can sign in with")


class StaffPasskeyOut(BaseModel):
    """One passkey of a staff member: never its public key nor its credential id."""

    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    name: str
    created_at: datetime
    last_used_at: datetime | None = Field(description="The last sign-in with it; null: never")
    transports: list[str] = Field(
        description="How the browser reaches the authenticator (`internal`, `hybrid`, `usb`…)"
    )


class PasskeysRemovedOut(BaseModel):
    removed: int
    """How many passkeys were removed."""
    sessions_ended: int
    """How many of the member's sessions ended (none when there was no passkey to remove)."""


class StaffChangeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str | None = Field(default=None, max_length=16, description="agent, finance or admin")
    active: bool | None = Field(default=None, description="false: no access, sessions end")
    reset_totp: bool = Field(default=False, description="Enrol a new authenticator at next sign-in")


class StaffPasswordIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    current_password: str = Field(max_length=1024)
    new_password: str = Field(
        max_length=1024, description="12 to 128 characters, not a common or breached password"
    )


class StaffPasswordResetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    new_password: str = Field(
        max_length=1024, description="12 to 128 characters, not a common or breached password"
    )


class TariffVersionOut(BaseModel):
    """One version of a tariff (minor units of `currency`; native units: seconds, bytes,
    messages) and when it was in force (`valid_until` empty: it still is)."""

    model_config = ConfigDict(from_attributes=True)
    service: str
    zone: str
    currency: str
    version: int
    price: int
    per_units: int
    first_increment: int
    next_increment: int
    minimum: int
    valid_from: datetime
    valid_until: datetime | None


class TakenOut(BaseModel):
    """What a usage record took from one pot of the line."""

    source: str
    """`wallet` or `bucket`."""
    account_id: uuid.UUID
    """The wallet's or bucket's ledger account."""
    amount: int
    """Minor units of the wallet's currency, or the bucket's seconds, bytes or messages."""
    unit: str


class UsageRecordOut(BaseModel):
    """One rated usage of a line: what it was, what it took from where, at which tariff."""

    id: uuid.UUID
    source: str
    external_id: str
    service: str
    country: str | None
    zone: str
    quantity: int
    rated: int
    from_buckets: int
    from_wallet: int
    charge: int
    currency: str
    unbilled: int
    started_at: datetime
    created_at: datetime
    taken: list[TakenOut]
    tariff: TariffVersionOut | None
    """The tariff version in force when it was rated."""

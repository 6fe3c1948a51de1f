"""What `/api/v1/me` takes and gives about the profile and lines."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from simcharge.auth.schemas import AccountOut, DisplayName
from simcharge.kit.schemas import Schema
from simcharge.lines.schemas import LineBalances

ZONE_DOC = (
    "An IANA time zone (`Asia/Manila`) the portal, e-mails and SMS write times in; `null`: the "
    "operator's"
)
FORMAT_DOC = (
    "The regional format of numbers, money and dates (`es_MX`) while reading a language with "
    "regional formats (Spanish); `null`: the browser's region, else the language's own"
)


class ProfileIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    display_name: DisplayName = None
    language: str | None = None
    email: str | None = Field(
        default=None, max_length=254, description="A new address: pending until its code is entered"
    )
    phone: str | None = Field(
        default=None, max_length=32, description="A new number: pending until its code is entered"
    )
    current_password: str | None = Field(
        default=None, max_length=1024, description="Required with `email` or `phone`"
    )
    code: str = Field(
        default="",
        max_length=64,
        description="With `email` or `phone`, when two-step verification is on: a code from "
        "the authenticator, or a recovery code (with two-step sign-in with a passkey: a "
        "recovery code, unless `credential` is given), as closing the account asks it",
    )
    credential: dict[str, Any] | None = Field(
        default=None,
        description="With `email` or `phone`, when two-step sign-in with a passkey is on: one of "
        "the account's passkeys' answer to `POST /api/v1/me/passkeys/confirm/options`, as "
        "`PublicKeyCredential.toJSON()` writes it (not this account's, this session's or "
        "verified: `401 invalid-second-factor`, field `credential`; malformed: `422 "
        "passkey-invalid`)",
    )
    time_zone: str | None = Field(default=None, max_length=64, description=ZONE_DOC)
    format_locale: str | None = Field(default=None, max_length=16, description=FORMAT_DOC)


class MeOut(AccountOut):
    """The profile, with how its times and numbers are written (times in this API stay ISO
    8601 UTC: they are for machines)."""

    time_zone: str | None = Field(description=ZONE_DOC)
    format_locale: str | None = Field(description=FORMAT_DOC)


class LineAttachIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    msisdn: str = Field(max_length=32, examples=["+14155550101"])


class LineVerifyIn(LineAttachIn):
    code: str = Field(max_length=16)


class OwnLine(Schema):
    id: uuid.UUID
    msisdn: str
    iccid: str
    label: str | None
    activation_code: str | None = Field(description="The eSIM activation code (LPA), for its owner")
    balances: LineBalances


class NoticeOut(Schema):
    id: uuid.UUID
    template: str
    title: str
    body: str
    params: dict[str, Any]
    line_id: uuid.UUID | None
    created_at: datetime
    read_at: datetime | None


class NoticesOut(Schema):
    unread: int
    notices: list[NoticeOut]


READ_AT_ONCE = 1000
"""Notices marked read by one request, named by id (a page shows far fewer; unbounded, one list
would pass the 32,767 parameters a PostgreSQL statement may have)."""


class ReadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[uuid.UUID] | None = Field(
        default=None, max_length=READ_AT_ONCE, description=f"None: all; at most {READ_AT_ONCE}"
    )


class CloseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: str = Field(max_length=1024, description="The current password, given again")
    code: str = Field(
        default="",
        max_length=64,
        description="With two-step verification on: a code from the authenticator, or a "
        "recovery code (with two-step sign-in with a passkey: a recovery code, unless "
        "`credential` is given)",
    )
    credential: dict[str, Any] | None = Field(
        default=None,
        description="With two-step sign-in with a passkey (or the app) on: one of the account's "
        "passkeys' answer to `POST /api/v1/me/passkeys/confirm/options`, as "
        "`PublicKeyCredential.toJSON()` writes it (not this account's, this session's or "
        "verified: `401 invalid-second-factor`, field `credential`; malformed: `422 "
        "passkey-invalid`)",
    )

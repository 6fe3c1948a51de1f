"""What the identity API takes and gives."""

from __future__ import annotations

import unicodedata
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from simcharge.errors import ValidationFailed
from simcharge.kit.schemas import Schema
from simcharge.kit.translations import N_


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


ChannelIn = Literal["email", "phone", "sms"]
CHANNEL_DOC = "`email`, or `phone` (the same as `sms`): the contact the code goes to"


def as_channel(channel: ChannelIn) -> Literal["email", "sms"]:
    """`phone` (the word customers use) and `sms` (how the code travels) are one channel."""
    return "email" if channel == "email" else "sms"


_REFUSED = frozenset({"Cc", "Zl", "Zp"})
_JOINERS = frozenset("\u200c\u200d")
"""The zero-width non-joiner and joiner: format characters some scripts need in a name
(Persian, the Indic scripts)."""


def _printable_name(value: str | None) -> str | None:
    """A display name without control characters (Unicode category Cc: a line break, a bell,
    a terminal's escape), line and paragraph separators (Zl, Zp: a line break by another name)
    or format characters (Cf: bidirectional overrides that show a name backwards, invisible
    ones), but for the joiners some scripts need: refused, `422` naming
    `display_name`, in the reader's language. A name is shown to staff, in e-mails and
    on pages; none of these characters belongs in one."""
    if value is not None and any(
        unicodedata.category(c) in _REFUSED or (unicodedata.category(c) == "Cf" and c not in _JOINERS)
        for c in value
    ):
        raise ValidationFailed(
            N_("A name cannot contain control or invisible formatting characters."),
            field="display_name",
        )
    return value


DisplayName = Annotated[
    str | None, Field(max_length=128), AfterValidator(_printable_name)
]
"""A display name as registration and a profile change take it (`_printable_name`)."""


class RegisterIn(_In):
    username: str = Field(max_length=64, examples=["maria"])
    password: str = Field(max_length=1024)
    email: str | None = Field(default=None, max_length=254, examples=["maria@example.com"])
    phone: str | None = Field(default=None, max_length=32, examples=["+34612345678"])
    language: str | None = Field(
        default=None,
        examples=["es"],
        description="The language of what the account is sent: `en`, `zh-Hans`, `zh-Hant`, "
        "`fil` or `es`. Left out: the best match for `Accept-Language`, else the operator's "
        "default language (`SIMCHARGE_DEFAULT_LANGUAGE`, `en` unless set).",
    )
    display_name: DisplayName = None


class RegisterOut(Schema):
    status: Literal["verification_sent"] = "verification_sent"
    channels: list[Literal["email", "sms"]]
    detail: str


class VerifyIn(_In):
    channel: ChannelIn = Field(description=CHANNEL_DOC)
    code: str = Field(max_length=16)
    login: str | None = Field(
        default=None,
        max_length=254,
        description="Needed when not signed in: username, e-mail or phone",
    )
    password: str | None = Field(
        default=None, max_length=1024, description="Needed with `login` when not signed in"
    )


class ResendIn(_In):
    channel: ChannelIn = Field(description=CHANNEL_DOC)


class LoginIn(_In):
    login: str = Field(max_length=254, description="Username, e-mail address or phone number")
    password: str = Field(max_length=1024)
    second_factor: str | None = Field(
        default=None, max_length=32, description="Authenticator code or recovery code"
    )
    mode: Literal["token", "cookie"] = Field(
        default="token",
        description="`token`: the session token is in the answer (API clients). `cookie`: it "
        "is set as an HttpOnly cookie and writes need the returned `csrf_token` "
        "in `X-CSRF-Token` (browsers).",
    )


class AccountOut(Schema):
    id: uuid.UUID
    username: str
    display_name: str | None
    email: str | None
    email_verified: bool
    email_pending: str | None
    phone: str | None
    phone_verified: bool
    phone_pending: str | None
    language: str
    status: str
    two_step: bool = Field(
        description="A sign-in with the password asks a second step: the authenticator app, or "
        "two-step sign-in with a passkey (`two_step_method` says which)"
    )
    two_step_method: Literal["app", "passkey"] | None = Field(
        description="`app`: an authenticator app's code (or a passkey, or a recovery code); "
        "`passkey`: two-step sign-in with a passkey (one of the account's passkeys, or a "
        "recovery code); `null`: off"
    )
    created_at: datetime
    password_changed_at: datetime | None


class LoginOut(Schema):
    session_id: uuid.UUID
    token: str | None = Field(description="Bearer token (mode `token`)")
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - the scheme's name
    csrf_token: str | None = Field(description="For `X-CSRF-Token` (mode `cookie`)")
    expires_at: datetime
    new_device: bool
    account: AccountOut


class ForgotIn(_In):
    login: str = Field(max_length=254)
    channel: ChannelIn = Field(description=CHANNEL_DOC)


class ResetIn(_In):
    login: str = Field(max_length=254)
    code: str = Field(max_length=16)
    new_password: str = Field(max_length=1024)


class Accepted(Schema):
    status: Literal["accepted"] = "accepted"
    detail: str


class UnlockRequestIn(ForgotIn):
    pass


class UnlockIn(_In):
    login: str = Field(max_length=254)
    code: str = Field(max_length=16)


class Done(Schema):
    status: Literal["ok"] = "ok"
    detail: str | None = None


class TokenOut(Schema):
    token: str | None = Field(description="The session's new bearer token (bearer sessions)")
    csrf_token: str | None = None


class SessionOut(Schema):
    id: uuid.UUID
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    ip: str | None
    user_agent: str | None
    two_step: bool
    current: bool


class SecurityEventOut(Schema):
    id: uuid.UUID
    kind: str
    success: bool
    ip: str | None
    user_agent: str | None
    details: dict[str, Any]
    created_at: datetime


class PasswordChangeIn(_In):
    current_password: str = Field(max_length=1024)
    new_password: str = Field(max_length=1024)


class PasswordIn(_In):
    password: str = Field(max_length=1024)


class TotpStartOut(Schema):
    secret: str
    otpauth_uri: str
    qr_svg: str = Field(description="data: URI of an SVG QR code of `otpauth_uri`")


class CodeIn(_In):
    code: str = Field(max_length=32)


class TotpConfirmOut(Schema):
    recovery_codes: list[str]
    token: str | None
    csrf_token: str | None


class TotpDisableIn(_In):
    password: str = Field(max_length=1024)
    code: str = Field(max_length=32)


class RecoveryCodesOut(Schema):
    recovery_codes: list[str]

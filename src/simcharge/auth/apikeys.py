"""API keys: `sck_<prefix>_<secret>`, shown once, stored as a SHA-256 hash, checked in constant time.

A key is high-entropy (256 bits), so a fast hash is enough: there is nothing to brute-force.
A key may expire (`expires_at`); rotating one makes a new key with its name and scopes and ends
the old one after an overlap, so that its users can switch without a gap."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import uuid
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.auth.models import ApiKey
from simcharge.backoffice.audit import Actor, record
from simcharge.backoffice.models import AuditEntry
from simcharge.db import table_of, upsert_insert
from simcharge.errors import (
    Conflict,
    Forbidden,
    IdempotencyKeyReused,
    NotFound,
    SimchargeError,
    ValidationFailed,
)
from simcharge.kit.clock import utcnow
from simcharge.kit.ids import uuid7
from simcharge.kit.translations import N_

audit = structlog.get_logger("simcharge.audit")

SCOPES: dict[str, str] = {
    "lines:read": N_("Read lines and their balances."),
    "catalog:read": N_("Read the catalog."),
    "ledger:read": N_("Read the ledger's trial balance (each account's debits and credits)."),
    "orders:read": N_(
        "Read any order, with its payment history and refunds, and the payments that matched "
        "no order."
    ),
    "refunds:write": N_("Refund orders (finance)."),
    "jobs:read": N_("Read the outbox: waiting and dead jobs (operations)."),
    "jobs:write": N_("Retry dead outbox jobs (operations)."),
    "charging": N_("Nchf_ConvergedCharging: real-time charging by the network (CHF)."),
    "usage:write": N_("Submit batches of usage records to be rated and charged."),
    "balance:read": N_("Read buckets, balances and balance actions (TMF654)."),
    "balance:write": N_("Top up, reserve and transfer balances (TMF654)."),
    "balance:adjust": N_("Adjust balances up or down (TMF654 adjustBalance; staff)."),
    "customers:read": N_("Search customers and read a customer's full view (back office)."),
    "tickets:write": N_("Read and answer tickets (back office)."),
    "accounts:write": N_("Unlock accounts, unfreeze lines, check payments, resend receipts."),
    "adjustments:write": N_("Ask for wallet and bucket adjustments (never approve them)."),
    "reports:read": N_("Read reports."),
    "catalog:write": N_("Edit the catalog."),
}
TOUCH_EVERY = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class IssuedKey:
    key: ApiKey
    token: str
    """The whole key; show it once."""


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


KEY_NAME_MAX = 80
"""The longest key name (`api_keys.name`)."""


ROTATION_OVERLAP = timedelta(hours=24)
"""How long a rotated key keeps working beside its successor unless told otherwise."""

LIFETIME_FIELDS = frozenset({"expires_in"})
"""Durations that are a key's lifetime (`--expires-in`, `expires_in`): zero is refused; an
overlap of zero is a rotation that ends the old key at once."""
_DURATION = re.compile(r"([0-9]{1,9})([mhdw])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str, *, field: str) -> timedelta:
    """`30m`, `24h`, `90d`, `2w`: a whole number of minutes, hours, days or weeks."""
    found = _DURATION.fullmatch(text.strip().lower())
    if found is None:
        raise ValidationFailed(
            N_("A whole number of minutes, hours, days or weeks: 30m, 24h, 90d, 2w."),
            field=field,
        )
    try:
        lifetime = timedelta(**{_UNITS[found[2]]: int(found[1])})
    except OverflowError as exc:
        raise ValidationFailed(N_("Too far in the future."), field=field) from exc
    if not lifetime and field in LIFETIME_FIELDS:
        # Refused as the lifetime it is, not later as an end already past (`expires_at`).
        raise ValidationFailed(N_("A key's lifetime must be longer than zero."), field=field)
    return lifetime


def parse_moment(text: str, *, field: str) -> datetime:
    """An ISO 8601 date and time with its offset (`2027-03-01T00:00:00Z`), in UTC."""
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise ValidationFailed(N_("Not a date and time."), field=field) from exc
    if parsed.tzinfo is None:
        raise ValidationFailed(N_("A time zone is required."), field=field)
    try:
        return parsed.astimezone(UTC)
    except OverflowError as exc:
        raise ValidationFailed(N_("Not a date and time."), field=field) from exc


def expiry_after(start: datetime, lifetime: timedelta, *, field: str) -> datetime:
    try:
        return start + lifetime
    except OverflowError as exc:
        raise ValidationFailed(N_("Too far in the future."), field=field) from exc


def _check_expiry(expires_at: datetime | None, now: datetime) -> None:
    if expires_at is not None and expires_at <= now:
        raise ValidationFailed(N_("The key would have expired already."), field="expires_at")


async def create_api_key(
    session: AsyncSession,
    name: str,
    scopes: Sequence[str],
    *,
    expires_at: datetime | None = None,
    request: tuple[str, str] | None = None,
    client_id: uuid.UUID | None = None,
) -> IssuedKey:
    """A new key; with `expires_at` it is refused from then on (else it lives until revoked).
    It belongs to the client `client_id` (a rotation's: the old key's), else to a new client:
    its own id.
    With `request` (its key and digest: `staff_create_api_key`), it is made only if no key was
    made for that request key: else `ApiKeyAlreadyCreated`, or `IdempotencyKeyReused` when the
    digest differs."""
    _check_expiry(expires_at, utcnow())
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValidationFailed(
            N_("Unknown scope(s): {scopes}."), field="scopes", scopes=", ".join(unknown)
        )
    if not name.strip():
        raise ValidationFailed(N_("A key needs a name."), field="name")
    if len(name.strip()) > KEY_NAME_MAX or not name.strip().isprintable():
        raise ValidationFailed(
            N_("At most {limit} characters, none of them control characters."),
            field="name", limit=KEY_NAME_MAX,
        )
    prefix = secrets.token_hex(6)
    token = f"sck_{prefix}_{secrets.token_urlsafe(32)}"
    key_id = uuid7()
    if request is not None:
        return await _create_once(
            session, key_id, name.strip(), prefix, token, sorted(set(scopes)), expires_at, request
        )
    key = ApiKey(
        id=key_id, client_id=client_id or key_id, name=name.strip(), prefix=prefix,
        secret_hash=_hash(token), scopes=sorted(set(scopes)), expires_at=expires_at,
    )
    session.add(key)
    await session.flush()
    return IssuedKey(key, token)


class ApiKeyAlreadyCreated(Conflict):
    """A retried create (the same `Idempotency-Key`, the same request): the key was made by
    the first one, whose answer alone carried its token."""

    slug = "api-key-already-created"
    title = N_("This API key was already created; its token was shown once and is not shown again.")

    def __init__(self, prefix: str) -> None:
        super().__init__(
            N_(
                "This API key was already created (sck_{prefix}_…); its token was shown once, on "
                "the answer to the first request, and is not shown again."
            ),
            prefix=prefix,
        )
        self.prefix = prefix

    def extra(self) -> dict[str, Any]:
        return {"prefix": self.prefix}


def create_request_key(who: str, idempotency_key: str | None) -> str | None:
    """The unique `api_keys.request_key` of a create by `who` with this key (None: without
    one, every create makes a key)."""
    return f"{who}:{idempotency_key}" if idempotency_key else None


def create_request_hash(
    name: str, scopes: Sequence[str], expires_in: str | None, expires_at: str | None
) -> str:
    """What a create asked for, as typed (a lifetime is compared as given, not as the moment it
    came to when first asked)."""
    asked = {
        "name": name.strip(),
        "scopes": sorted(set(scopes)),
        "expires_in": (expires_in or "").strip(),
        "expires_at": (expires_at or "").strip(),
    }
    return hashlib.sha256(json.dumps(asked, sort_keys=True).encode()).hexdigest()


async def _earlier(session: AsyncSession, request_key: str, digest: str) -> SimchargeError | None:
    made = (
        await session.execute(
            select(ApiKey.prefix, ApiKey.request_hash).where(ApiKey.request_key == request_key)
        )
    ).first()
    if made is None:
        return None
    if made.request_hash != digest:
        return IdempotencyKeyReused(field="Idempotency-Key")
    return ApiKeyAlreadyCreated(made.prefix)


async def _create_once(
    session: AsyncSession,
    key_id: uuid.UUID,
    name: str,
    prefix: str,
    token: str,
    scopes: list[str],
    expires_at: datetime | None,
    request: tuple[str, str],
) -> IssuedKey:
    """Insert the key unless one was made for this request key: two submits at once make one
    (on PostgreSQL the second insert waits for the first's commit, then does nothing)."""
    request_key, digest = request
    keys = table_of(ApiKey)
    made = (
        await session.execute(
            upsert_insert(session, keys)
            .values(
                id=key_id, client_id=key_id, name=name, prefix=prefix, secret_hash=_hash(token),
                scopes=scopes, created_at=utcnow(), expires_at=expires_at, request_key=request_key,
                request_hash=digest,
            )
            .on_conflict_do_nothing(index_elements=["request_key"])
            .returning(keys.c.id)
        )
    ).scalar_one_or_none()
    if made is None:
        refusal = await _earlier(session, request_key, digest)
        assert refusal is not None  # the row that stopped the insert is committed
        raise refusal
    key = await session.get(ApiKey, made)
    assert key is not None
    return IssuedKey(key, token)


_refusal: ContextVar[tuple[str, str] | None] = ContextVar("apikey_refusal", default=None)
"""Why the last token `verify_api_key` refused in this context was not a live key, when it was
a key (its hash, the reason): `log_refused` says it instead of `invalid`. The answer to the
client stays the same whatever the reason."""


async def verify_api_key(session: AsyncSession, token: str) -> ApiKey | None:
    """The live key that `token` is, or None. Never says which part was wrong (an expired key
    is refused as a revoked one is; only the log says `expired`)."""
    _refusal.set(None)
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != "sck":
        return None
    key = (
        await session.execute(select(ApiKey).where(ApiKey.prefix == parts[1]))
    ).scalar_one_or_none()
    if key is None or key.revoked_at is not None:
        return None
    if not hmac.compare_digest(key.secret_hash, _hash(token)):
        return None
    now = utcnow()
    if key.expires_at is not None and key.expires_at <= now:
        _refusal.set((key.secret_hash, "expired"))
        return None
    if key.last_used_at is None or now - key.last_used_at > TOUCH_EVERY:
        await session.execute(update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now))
    return key


@dataclass(frozen=True, slots=True)
class KeyClient:
    """The client a key belongs to, across rotations (`ApiKey.client_id`)."""

    id: str
    """The client id, as charging sessions and TMF654 idempotency scopes store it."""
    prefixes: tuple[str, ...]
    """Every key prefix of the client: what those stored before the client id was kept (and
    what the balance actions of each of its keys name as their actor)."""


async def client_of(session: AsyncSession, key: ApiKey) -> KeyClient:
    """The client of `key`, with the prefixes of all its keys (a rotation chain: a few)."""
    prefixes = (
        await session.execute(
            select(ApiKey.prefix).where(ApiKey.client_id == key.client_id).order_by(ApiKey.prefix)
        )
    ).scalars().all()
    return KeyClient(str(key.client_id), tuple(prefixes) or (key.prefix,))


def log_refused(token: str, *, reason: str, ip: str | None, scope: str | None = None) -> None:
    """A request an API key did not let in (ASVS 7.1.3): the key's public prefix only — never
    the secret part — the client's address, and why (`invalid`: no live key is that token;
    `expired`: it is a key, past its `expires_at`; `scope`: a live key without `scope`)."""
    parts = token.split("_", 2)
    prefix = parts[1][:12] if len(parts) == 3 and parts[0] == "sck" else None
    known = _refusal.get()
    if reason == "invalid" and known is not None and hmac.compare_digest(known[0], _hash(token)):
        reason = known[1]
    audit.warning("apikey.refused", reason=reason, key_prefix=prefix, ip=ip, scope=scope)


def key_state(key: ApiKey, now: datetime) -> str:
    """`revoked`, `expired`, or `live`."""
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= now:
        return "expired"
    return "live"


async def list_api_keys(session: AsyncSession) -> Sequence[ApiKey]:
    """Every key, the newest first: revoked and expired ones too (their prefix is in logs)."""
    return (
        await session.execute(select(ApiKey).order_by(ApiKey.created_at.desc(), ApiKey.id.desc()))
    ).scalars().all()


@dataclass(frozen=True, slots=True)
class RotatedKey:
    issued: IssuedKey
    """The new key (the whole token: show it once)."""
    old: ApiKey
    old_expires_before: datetime | None
    """When the old key expired before it was rotated (none: never)."""


async def rotate_api_key(
    session: AsyncSession,
    prefix: str,
    *,
    overlap: timedelta = ROTATION_OVERLAP,
    expires_at: datetime | None = None,
) -> RotatedKey | None:
    """A new key with the live key `prefix`'s name and scopes; the old one expires after
    `overlap` (sooner if it was to expire sooner). The new key expires at `expires_at`, else
    after the old key's lifetime if it had one (a key made for 90 days is followed by one for
    90 days). None when no live key has that prefix."""
    if overlap < timedelta(0):
        raise ValidationFailed(N_("The overlap cannot be negative."), field="overlap")
    now = utcnow()
    old = (
        await session.execute(
            select(ApiKey).where(ApiKey.prefix == prefix).with_for_update()
        )
    ).scalar_one_or_none()
    if old is None or key_state(old, now) != "live":
        return None
    if expires_at is None and old.expires_at is not None:
        expires_at = expiry_after(now, old.expires_at - old.created_at, field="expires_at")
    issued = await create_api_key(
        session, old.name, old.scopes, expires_at=expires_at, client_id=old.client_id
    )
    before = old.expires_at
    ends = expiry_after(now, overlap, field="overlap")
    old.expires_at = ends if before is None else min(before, ends)
    await session.flush()
    return RotatedKey(issued, old, before)


async def revoke_api_key(session: AsyncSession, prefix: str) -> bool:
    result = await session.execute(
        update(ApiKey)
        .where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return bool(getattr(result, "rowcount", 0))


# --- the back office: staff manage keys (the page and the admin API) ---------------------------

STAFF_OVERLAPS: dict[str, timedelta] = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
}
"""The overlaps staff choose from when they rotate a key (the command line takes any)."""
COMMAND_LINE_SCOPES = frozenset({"balance:adjust"})
"""Scopes only the server's command line gives a key: staff neither make nor rotate a key that
holds one (the README gives admins no power to mint a TMF654 `adjustBalance` credential)."""


class ApiKeyNotFound(NotFound):
    slug = "api-key-not-found"
    title = N_("No live API key has this prefix.")


class ApiKeyAlreadyReplaced(Conflict):
    slug = "api-key-already-replaced"
    title = N_("This key was already replaced by a rotation: rotate its successor instead.")


class ScopeForCommandLineOnly(Forbidden):
    slug = "api-key-scope-command-line-only"
    title = N_("Only the server's command line makes or rotates a key with this scope.")


@dataclass(frozen=True, slots=True)
class KeyView:
    """One key as staff see it: never its secret nor its hash."""

    prefix: str
    name: str
    scopes: list[str]
    state: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    """To within `TOUCH_EVERY`."""
    revoked_at: datetime | None
    replaces: str | None
    """The prefix of the key this one was made to replace, when a rotation recorded it."""
    replaced_by: str | None



async def refuse_replaced(session: AsyncSession, prefix: str) -> None:
    """`ApiKeyAlreadyReplaced` if the key `prefix` was rotated already (read under its lock,
    after `rotate_api_key`: the caller's transaction rolls the new key back). A key has one
    successor: two rotations of one key would make two live keys and fork its client's chain."""
    if await _successions(session, [prefix]):
        raise ApiKeyAlreadyReplaced(field="prefix")


async def _successions(session: AsyncSession, prefixes: Sequence[str]) -> dict[str, str]:
    """Old prefix → new prefix, as the rotations' audit entries recorded them (`apikey.rotate`,
    `after.replaced_by`): the table itself keeps no link."""
    if not prefixes:
        return {}
    rows = await session.execute(
        select(AuditEntry.target_id, AuditEntry.after)
        .where(
            AuditEntry.target_type == "api_key",
            AuditEntry.target_id.in_(prefixes),
            AuditEntry.action == "apikey.rotate",
        )
        .order_by(AuditEntry.at)
    )
    found: dict[str, str] = {}
    for old, after in rows:
        new = after.get("replaced_by") if isinstance(after, dict) else None
        if old is not None and isinstance(new, str):
            found[old] = new
    return found


async def key_views(
    session: AsyncSession, now: datetime, *, offset: int = 0, limit: int | None = None
) -> list[KeyView]:
    """Every key (from `offset`, at most `limit`), the newest first, with its state and what
    it replaced or was replaced by."""
    stmt = select(ApiKey).order_by(ApiKey.created_at.desc(), ApiKey.id.desc()).offset(offset)
    if limit is not None:
        stmt = stmt.limit(limit)
    keys = (await session.execute(stmt)).scalars().all()
    return await _views(session, keys, now)


async def count_api_keys(session: AsyncSession) -> int:
    """How many keys `key_views` pages through."""
    return int((await session.execute(select(func.count()).select_from(ApiKey))).scalar_one())


async def key_view(session: AsyncSession, key: ApiKey, now: datetime) -> KeyView:
    """One key as the list shows it: with what it replaced and what replaced it (the answer to
    a revoke, whose key may have been rotated)."""
    return (await _views(session, [key], now))[0]


async def _views(session: AsyncSession, keys: Sequence[ApiKey], now: datetime) -> list[KeyView]:
    prefixes = [k.prefix for k in keys]
    after = await _successions(session, prefixes)
    # What each key replaced: its own creation's entry says (`rotated_from`), on its page or not.
    made = (
        await session.execute(
            select(AuditEntry.target_id, AuditEntry.after).where(
                AuditEntry.target_type == "api_key",
                AuditEntry.target_id.in_(prefixes),
                AuditEntry.action == "apikey.create",
            )
        )
    ).all() if keys else []
    before = {
        new: old for new, facts in made
        if isinstance(facts, dict) and isinstance(old := facts.get("rotated_from"), str)
    }
    return [
        view_of(k, now, replaces=before.get(k.prefix), replaced_by=after.get(k.prefix))
        for k in keys
    ]


def view_of(
    key: ApiKey, now: datetime, *, replaces: str | None = None, replaced_by: str | None = None
) -> KeyView:
    return KeyView(
        prefix=key.prefix,
        name=key.name,
        scopes=list(key.scopes),
        state=key_state(key, now),
        created_at=key.created_at,
        expires_at=key.expires_at,
        last_used_at=key.last_used_at,
        revoked_at=key.revoked_at,
        replaces=replaces,
        replaced_by=replaced_by,
    )


def asked_expiry(expires_in: str | None, expires_at: str | None, now: datetime) -> datetime | None:
    """The end a form asks for: a lifetime (`90d`) or a moment (ISO 8601 with its offset), not
    both; neither: never."""
    expires_in = (expires_in or "").strip() or None
    expires_at = (expires_at or "").strip() or None
    if expires_in is not None and expires_at is not None:
        raise ValidationFailed(
            N_("Give a lifetime or a moment, not both."), field="expires_at"
        )
    if expires_in is not None:
        return expiry_after(now, parse_duration(expires_in, field="expires_in"), field="expires_in")
    if expires_at is not None:
        return parse_moment(expires_at, field="expires_at")
    return None


def _refuse_command_line_scopes(scopes: Sequence[str]) -> None:
    if set(scopes) & COMMAND_LINE_SCOPES:
        raise ScopeForCommandLineOnly(field="scopes")


def overlap_named(name: str) -> timedelta:
    """One of `STAFF_OVERLAPS`, by its name."""
    try:
        return STAFF_OVERLAPS[name]
    except KeyError:
        raise ValidationFailed(
            N_("Choose one of: {choices}."), field="overlap", choices=", ".join(STAFF_OVERLAPS)
        ) from None


async def staff_create_api_key(
    session: AsyncSession,
    actor: Actor,
    name: str,
    scopes: Sequence[str],
    *,
    expires_at: datetime | None,
    request: tuple[str, str] | None = None,
) -> IssuedKey:
    """`create_api_key` for staff: at least one scope, none of `COMMAND_LINE_SCOPES`; audited
    as `apikey.create` (as `simcharge apikey create` is), without the secret. With `request`
    (`create_request_key`, `create_request_hash`): a retry of a create that made a key is
    refused as `ApiKeyAlreadyCreated` (before anything else is checked: what it asked for was
    valid), the same request key with another request as `IdempotencyKeyReused`."""
    if request is not None:
        refusal = await _earlier(session, *request)
        if refusal is not None:
            raise refusal
    if not scopes:
        raise ValidationFailed(N_("Choose at least one scope."), field="scopes")
    _refuse_command_line_scopes(scopes)
    issued = await create_api_key(session, name, scopes, expires_at=expires_at, request=request)
    after: dict[str, object] = {"name": issued.key.name, "scopes": issued.key.scopes}
    if expires_at is not None:
        after["expires_at"] = expires_at
    await record(
        session, actor, "apikey.create", target_type="api_key", target_id=issued.key.prefix,
        after=after,
    )
    return issued


async def staff_rotate_api_key(
    session: AsyncSession, actor: Actor, prefix: str, *, overlap: timedelta
) -> RotatedKey:
    """`rotate_api_key` for staff, audited as the command's is (`apikey.create` of the new key
    with `rotated_from`, `apikey.rotate` of the old one with `replaced_by`). A key holding one
    of `COMMAND_LINE_SCOPES`, or one already replaced (during its overlap), is refused after the
    fact: the caller's transaction rolls back."""
    rotated = await rotate_api_key(session, prefix, overlap=overlap)
    if rotated is None:
        raise ApiKeyNotFound(field="prefix")
    _refuse_command_line_scopes(rotated.old.scopes)
    # Read under the old key's lock: a form sent twice (a reload of the answer) or two admins
    # at once make one successor, not two live keys nobody holds.
    await refuse_replaced(session, prefix)
    new = rotated.issued.key
    after: dict[str, object] = {"name": new.name, "scopes": new.scopes, "rotated_from": prefix}
    if new.expires_at is not None:
        after["expires_at"] = new.expires_at
    await record(
        session, actor, "apikey.create", target_type="api_key", target_id=new.prefix, after=after
    )
    await record(
        session, actor, "apikey.rotate", target_type="api_key", target_id=prefix,
        before={"expires_at": rotated.old_expires_before},
        after={"expires_at": rotated.old.expires_at, "replaced_by": new.prefix},
    )
    return rotated


async def staff_revoke_api_key(session: AsyncSession, actor: Actor, prefix: str) -> ApiKey:
    """Revoke a key at once (an expired one too, as the command does); audited as
    `apikey.revoke` with its state before."""
    key = (
        await session.execute(select(ApiKey).where(ApiKey.prefix == prefix).with_for_update())
    ).scalar_one_or_none()
    if key is None or key.revoked_at is not None:
        raise ApiKeyNotFound(field="prefix")
    now = utcnow()
    before = {"state": key_state(key, now), "expires_at": key.expires_at}
    key.revoked_at = now
    await session.flush()
    await record(
        session, actor, "apikey.revoke", target_type="api_key", target_id=prefix,
        before=before, after={"state": "revoked", "revoked_at": now},
    )
    return key

"""API keys: `sck_<prefix>_<secret>`, shown once, stored as a SHA-256 hash, checked in constant time.

A key is high-entropy (256 bits), so a fast hash is enough: there is nothing to brute-force."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.auth.models import ApiKey
from simcharge.errors import ValidationFailed
from simcharge.kit.clock import utcnow
from simcharge.kit.translations import N_

audit = structlog.get_logger("simcharge.audit")

SCOPES: dict[str, str] = {
    "lines:read": "Read lines and their balances.",
    "catalog:read": "Read the catalog.",
    "ledger:read": "Read ledger accounts and transfers.",
    "orders:read": "Read any order, with its payment history and refunds.",
    "refunds:write": "Refund orders (finance).",
    "jobs:read": "Read the outbox: waiting and dead jobs (operations).",
    "jobs:write": "Retry dead outbox jobs (operations).",
    "charging": "Nchf_ConvergedCharging: real-time charging by the network (CHF).",
    "usage:write": "Submit batches of usage records to be rated and charged.",
    "balance:read": "Read buckets, balances and balance actions (TMF654).",
    "balance:write": "Top up, reserve and transfer balances (TMF654).",
    "balance:adjust": "Adjust balances up or down (TMF654 adjustBalance; staff).",
    "customers:read": "Search customers and read a customer's full view (back office).",
    "tickets:write": "Read and answer tickets (back office).",
    "accounts:write": "Unlock accounts, unfreeze lines, check payments, resend receipts.",
    "adjustments:write": "Ask for wallet and bucket adjustments (never approve them).",
    "reports:read": "Read reports.",
    "catalog:write": "Edit the catalog.",
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


async def create_api_key(session: AsyncSession, name: str, scopes: Sequence[str]) -> IssuedKey:
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
    key = ApiKey(
        name=name.strip(), prefix=prefix, secret_hash=_hash(token), scopes=sorted(set(scopes))
    )
    session.add(key)
    await session.flush()
    return IssuedKey(key, token)


async def verify_api_key(session: AsyncSession, token: str) -> ApiKey | None:
    """The live key that `token` is, or None. Never says which part was wrong."""
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
    if key.last_used_at is None or now - key.last_used_at > TOUCH_EVERY:
        await session.execute(update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now))
    return key


def log_refused(token: str, *, reason: str, ip: str | None, scope: str | None = None) -> None:
    """A request an API key did not let in (ASVS 7.1.3): the key's public prefix only — never
    the secret part — the client's address, and why (`invalid`: no live key is that token;
    `scope`: a live key without `scope`)."""
    parts = token.split("_", 2)
    prefix = parts[1][:12] if len(parts) == 3 and parts[0] == "sck" else None
    audit.warning("apikey.refused", reason=reason, key_prefix=prefix, ip=ip, scope=scope)


async def revoke_api_key(session: AsyncSession, prefix: str) -> bool:
    result = await session.execute(
        update(ApiKey)
        .where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return bool(getattr(result, "rowcount", 0))

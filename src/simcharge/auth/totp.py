"""Two-step verification with an authenticator app (RFC 6238 TOTP) and recovery codes.

The secret is sealed in the database; each time step is accepted once (a code cannot be
replayed); one step of clock drift either way is tolerated. Recovery codes: ten, 10 base32
characters each, single use, kept as keyed hashes.

Both survive a rotation of the secret key: they are read with the key ring (the current key,
then `SIMCHARGE_SECRET_KEY_PREVIOUS`); a secret opened by an older key is sealed again under the
current one when a code from it is accepted (`simcharge secrets reseal` does it for all). A
recovery code is a hash: it cannot be re-hashed, so its key stays in the ring until the code is
spent or replaced."""

from __future__ import annotations

import base64
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

import pyotp
import segno
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account
from simcharge.auth.models import RecoveryCode
from simcharge.kit.crypto import Ring, as_ring, seal, tagged_hash, tagged_hashes, unseal_any

RECOVERY_CODES = 10
STEP = 30


@dataclass(frozen=True, slots=True)
class Enrolment:
    secret: str
    uri: str
    qr_svg: str
    """A `data:image/svg+xml` URI of the QR code of `uri`."""

    @property
    def grouped_secret(self) -> str:
        """The secret in blocks of four, as a person reads and types it into an app (which
        ignores the spaces); what is stored and checked is `secret`."""
        return " ".join(self.secret[i : i + 4] for i in range(0, len(self.secret), 4))


def new_enrolment(secret_key: str, account: Account, issuer: str) -> tuple[Enrolment, str]:
    """A fresh TOTP secret for `account`: what to show, and what to store (sealed)."""
    secret = pyotp.random_base32(32)
    uri = pyotp.TOTP(secret).provisioning_uri(name=account.username, issuer_name=issuer)
    qr = segno.make(uri, error="m").svg_data_uri(scale=4)
    return Enrolment(secret, uri, qr), seal(secret_key, "totp-secret", secret.encode())


PURPOSE = "totp-secret"


def _secret(keys: Ring, account: Account) -> tuple[str, bool] | None:
    if not account.totp_secret_sealed:
        return None
    plaintext, current = unseal_any(keys, PURPOSE, account.totp_secret_sealed)
    return plaintext.decode(), current


def accept_totp(keys: Ring, account: Account, code: str, now: datetime) -> bool:
    """Accept a current, not yet used, code; remember its time step. `keys`: the key ring
    (`Settings.secret_keys`); a secret opened by an older key is sealed again under the current
    one once a code from it is accepted. `SealBroken` when no key of the ring opens it."""
    ring = as_ring(keys)
    opened = _secret(ring, account)
    candidate = code.strip().replace(" ", "")
    if opened is None or not (candidate.isascii() and candidate.isdigit() and len(candidate) == 6):
        return False
    secret, by_current_key = opened
    totp = pyotp.TOTP(secret)
    current = int(now.timestamp()) // STEP
    for step in (current - 1, current, current + 1):
        if step <= (account.totp_last_step or -1):
            continue
        if secrets.compare_digest(totp.at(step * STEP), candidate):
            account.totp_last_step = step
            if not by_current_key:
                account.totp_secret_sealed = seal(ring[0], PURPOSE, secret.encode())
            return True
    return False


def _recovery_value(account_id: uuid.UUID, code: str) -> str:
    normalized = code.strip().replace("-", "").replace(" ", "").upper()
    return f"{account_id}|{normalized}"


def _recovery_hash(secret_key: str, account_id: uuid.UUID, code: str) -> str:
    """Tagged with the key's id (`kit.crypto.tagged_hash`): `simcharge secrets reseal` counts
    the accounts whose codes a previous key hashed."""
    return tagged_hash(secret_key, "recovery-code", _recovery_value(account_id, code))


async def new_recovery_codes(
    session: AsyncSession, secret_key: str, account_id: uuid.UUID, now: datetime
) -> list[str]:
    """Replace the account's recovery codes; returns them (shown once). Hashed under the
    current key (`secret_key`) only."""
    await session.execute(delete(RecoveryCode).where(RecoveryCode.account_id == account_id))
    codes = []
    for _ in range(RECOVERY_CODES):
        raw = base64.b32encode(secrets.token_bytes(7)).decode()[:10]
        codes.append(f"{raw[:5]}-{raw[5:]}")
        session.add(
            RecoveryCode(
                account_id=account_id,
                created_at=now,
                code_hash=_recovery_hash(secret_key, account_id, raw),
            )
        )
    await session.flush()
    return codes


async def use_recovery_code(
    session: AsyncSession, keys: Ring, account_id: uuid.UUID, code: str, now: datetime
) -> int | None:
    """Spend a recovery code; returns how many are left, or None if it is not valid. `keys`:
    the key ring — a code hashed under any of its keys is good (a hash cannot be re-hashed)."""
    digests = tagged_hashes(keys, "recovery-code", _recovery_value(account_id, code))
    row = (
        await session.execute(
            select(RecoveryCode)
            .where(
                RecoveryCode.account_id == account_id,
                RecoveryCode.code_hash.in_(digests),
                RecoveryCode.used_at.is_(None),
            )
            .with_for_update()
        )
    ).scalar_one_or_none()
    if row is None:
        return None
    row.used_at = now
    await session.flush()
    left = await session.execute(
        select(RecoveryCode).where(
            RecoveryCode.account_id == account_id, RecoveryCode.used_at.is_(None)
        )
    )
    return len(left.scalars().all())


async def forget_recovery_codes(session: AsyncSession, account_id: uuid.UUID) -> None:
    await session.execute(delete(RecoveryCode).where(RecoveryCode.account_id == account_id))

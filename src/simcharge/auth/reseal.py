"""`simcharge secrets reseal`: every stored value sealed under a previous secret key, sealed
again under the current one, so that the previous key can leave the ring
(`SIMCHARGE_SECRET_KEY_PREVIOUS`).

What is sealed and kept: customers' TOTP secrets (`accounts.totp_secret_sealed`), staff's
(`staff_users.totp_secret_sealed`), and the codes of queued messages (an outbox job
`notifications.code` not yet run: `payload.sealed`). Each row is locked and re-read in its own
batch transaction (safe while the site and the worker run; a sign-in that re-seals the same
secret at once writes the same thing). Run again, it changes nothing.

Recovery codes are hashes: they cannot be re-hashed. The report counts the accounts holding
unused ones per key (each hash is tagged with its key's id, `kit.crypto.tagged_hash`; those
made before hashes were tagged cannot be told). README, "Rotating the secret key"."""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.accounts.models import Account
from simcharge.auth.models import RecoveryCode
from simcharge.backoffice import audit
from simcharge.backoffice.models import StaffUser
from simcharge.db import Database
from simcharge.kit.crypto import SealBroken, as_ring, hash_key_id, key_id, resealed
from simcharge.notifications.service import SEND_CODE
from simcharge.worker.models import JobStatus, OutboxJob

BATCH = 500

log = structlog.get_logger("simcharge.crypto")


@dataclass
class Sealed:
    """One kind of sealed value: how many were sealed again, already under the current key,
    and opened by no key of the ring (left as they are)."""

    resealed: int = 0
    current: int = 0
    broken: int = 0


@dataclass
class ResealReport:
    current_key: str
    """The current key's id (`kit.crypto.key_id`)."""
    sealed: dict[str, Sealed] = field(default_factory=dict)
    recovery: Counter[str] = field(default_factory=Counter)
    """Accounts holding unused recovery codes, by the id of the key that hashed them
    (`unknown`: made before hashes were tagged); an account is counted under each key."""

    @property
    def changed(self) -> int:
        return sum(s.resealed for s in self.sealed.values())


async def _batch(
    session: AsyncSession,
    keys: tuple[str, ...],
    model: Any,
    purpose: str,
    after: uuid.UUID | None,
    dry_run: bool,
) -> tuple[uuid.UUID | None, Sealed]:
    """One batch of `model` (`Account` or `StaffUser`) rows after `after`, locked: the last
    row's id when there may be more, and the counts."""
    tally = Sealed()
    query = select(model).where(model.totp_secret_sealed.is_not(None))
    if after is not None:
        query = query.where(model.id > after)
    rows: list[Account | StaffUser] = list(
        (await session.execute(query.order_by(model.id).limit(BATCH).with_for_update()))
        .scalars()
        .all()
    )
    for row in rows:
        assert row.totp_secret_sealed is not None
        try:
            again = resealed(keys, purpose, row.totp_secret_sealed)
        except SealBroken:
            tally.broken += 1
            continue
        if again is None:
            tally.current += 1
            continue
        tally.resealed += 1
        if not dry_run:
            row.totp_secret_sealed = again
    await session.flush()
    return (rows[-1].id if len(rows) == BATCH else None), tally


async def _secrets(
    db: Database, keys: tuple[str, ...], model: Any, purpose: str, dry_run: bool
) -> Sealed:
    tally, after = Sealed(), None
    while True:
        after, batch = await db.run(partial(_batch, keys=keys, model=model, purpose=purpose,
                                            after=after, dry_run=dry_run))
        tally.resealed += batch.resealed
        tally.current += batch.current
        tally.broken += batch.broken
        if after is None:
            return tally


async def _queued_codes(db: Database, keys: tuple[str, ...], dry_run: bool) -> Sealed:
    """The codes of messages waiting in the outbox (not those being sent: their worker holds
    them; a code lives 10 minutes)."""
    tally = Sealed()

    async def run(s: AsyncSession) -> None:
        tally.resealed = tally.current = tally.broken = 0
        jobs = (
            await s.execute(
                select(OutboxJob)
                .where(OutboxJob.kind == SEND_CODE, OutboxJob.status == JobStatus.pending.value)
                .with_for_update(skip_locked=True)
            )
        ).scalars().all()
        for job in jobs:
            sealed = job.payload.get("sealed")
            if not isinstance(sealed, str):
                continue
            try:
                again = resealed(keys, "outbox-code", sealed)
            except SealBroken:
                tally.broken += 1
                continue
            if again is None:
                tally.current += 1
                continue
            tally.resealed += 1
            if not dry_run:
                payload: dict[str, Any] = dict(job.payload)
                payload["sealed"] = again
                job.payload = payload
        await s.flush()

    await db.run(run)
    return tally


async def _recovery(db: Database, keys: tuple[str, ...]) -> Counter[str]:
    known = {key_id(k) for k in keys}
    async with db.read() as s:
        rows = (
            await s.execute(
                select(RecoveryCode.account_id, RecoveryCode.code_hash).where(
                    RecoveryCode.used_at.is_(None)
                )
            )
        ).all()
    by_key: dict[str, set[uuid.UUID]] = {}
    for account_id, code_hash in rows:
        tag = hash_key_id(code_hash)
        by_key.setdefault(tag if tag in known else "unknown", set()).add(account_id)
    return Counter({tag: len(ids) for tag, ids in by_key.items()})


async def reseal(
    db: Database,
    keys: tuple[str, ...],
    *,
    dry_run: bool = False,
    actor: audit.Actor | None = None,
) -> ResealReport:
    """Seal every stored sealed value again under `keys[0]` (the ring: `Settings.secret_keys`);
    `dry_run` counts only. Logs the counts (never a value); with `actor`, audited as
    `secrets.reseal` with the counts (not a dry run)."""
    ring = as_ring(keys)
    report = ResealReport(current_key=key_id(ring[0]))
    report.sealed["customer TOTP secrets"] = await _secrets(
        db, ring, Account, "totp-secret", dry_run
    )
    report.sealed["staff TOTP secrets"] = await _secrets(db, ring, StaffUser, "staff-totp", dry_run)
    report.sealed["queued codes"] = await _queued_codes(db, ring, dry_run)
    report.recovery = await _recovery(db, ring)
    log.info(
        "crypto.resealed",
        dry_run=dry_run,
        current_key=report.current_key,
        counts={name: vars(s) for name, s in report.sealed.items()},
        recovery_accounts=dict(report.recovery),
    )
    if actor is not None and not dry_run:
        details = {
            "current_key": report.current_key,
            "sealed": {name: vars(s) for name, s in report.sealed.items()},
            "recovery_accounts": dict(report.recovery),
        }

        async def record(s: AsyncSession) -> None:
            await audit.record(s, actor, "secrets.reseal", details=details)

        await db.run(record)
    return report

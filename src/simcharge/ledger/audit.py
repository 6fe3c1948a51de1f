"""Checking the books: the ledger's promises, verified from the stored rows.

`verify_ledger` recomputes every account's four totals from its transfers and compares them
with the stored ones, checks that each unit sums to zero, that no bounded account crossed its
bound, that every account a transfer names exists and that every post, void and expiry agrees
with the reservation it resolves. Reservations past their timeout are counted, not judged: the
sweep releases them on its next run. It reads set-based (one pass over
`ledger_transfers` grouped by account), so it can run on a live database from
`simcharge ledger verify` or the chaos run; on a very large ledger, run it on a replica.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.kit.clock import utcnow
from simcharge.ledger.models import LedgerTransfer

# Every sum is taken in two halves, the high and the low 32 bits of each amount, put together in
# Python: SQLite's SUM raises "integer overflow" past 2^63 - 1, which the totals of a unit pass
# when two of its accounts are near the bound (each within it, as the ledger allows), and so
# might a damaged account's transfers. PostgreSQL runs the same statements (its SUM of a bigint is
# a numeric and would not overflow; one text, one result). Both shift arithmetically, so even a
# negative total (damage) splits into halves that add up again. Per account the halves are
# carried (the low one below 2^32) and compared with the stored total's halves.
#
# Posted movements: `posted` transfers and the posted part of a reservation (`post_pending`).
# Reserved: `pending` transfers still pending. Voided and expired reservations move nothing.
_RECOMPUTED = text(
    """
    WITH moves AS (
        SELECT debit_account_id AS account_id,
               SUM(CASE WHEN kind IN ('posted', 'post_pending') THEN amount >> 32 ELSE 0 END)
                   AS dpo_h,
               SUM(CASE WHEN kind IN ('posted', 'post_pending') THEN amount & 4294967295
                        ELSE 0 END) AS dpo_l,
               SUM(CASE WHEN kind = 'pending' AND pending_status = 'pending'
                        THEN amount >> 32 ELSE 0 END) AS dp_h,
               SUM(CASE WHEN kind = 'pending' AND pending_status = 'pending'
                        THEN amount & 4294967295 ELSE 0 END) AS dp_l,
               0 AS cpo_h, 0 AS cpo_l, 0 AS cp_h, 0 AS cp_l
        FROM ledger_transfers GROUP BY debit_account_id
        UNION ALL
        SELECT credit_account_id, 0, 0, 0, 0,
               SUM(CASE WHEN kind IN ('posted', 'post_pending') THEN amount >> 32 ELSE 0 END),
               SUM(CASE WHEN kind IN ('posted', 'post_pending') THEN amount & 4294967295
                        ELSE 0 END),
               SUM(CASE WHEN kind = 'pending' AND pending_status = 'pending'
                        THEN amount >> 32 ELSE 0 END),
               SUM(CASE WHEN kind = 'pending' AND pending_status = 'pending'
                        THEN amount & 4294967295 ELSE 0 END)
        FROM ledger_transfers GROUP BY credit_account_id
    ), sums AS (
        SELECT account_id,
               CAST(SUM(dpo_h) AS BIGINT) AS dpo_h, CAST(SUM(dpo_l) AS BIGINT) AS dpo_l,
               CAST(SUM(dp_h) AS BIGINT) AS dp_h, CAST(SUM(dp_l) AS BIGINT) AS dp_l,
               CAST(SUM(cpo_h) AS BIGINT) AS cpo_h, CAST(SUM(cpo_l) AS BIGINT) AS cpo_l,
               CAST(SUM(cp_h) AS BIGINT) AS cp_h, CAST(SUM(cp_l) AS BIGINT) AS cp_l
        FROM moves GROUP BY account_id
    ), totals AS (
        SELECT account_id,
               dpo_h + (dpo_l >> 32) AS dpo_h, dpo_l & 4294967295 AS dpo_l,
               dp_h + (dp_l >> 32) AS dp_h, dp_l & 4294967295 AS dp_l,
               cpo_h + (cpo_l >> 32) AS cpo_h, cpo_l & 4294967295 AS cpo_l,
               cp_h + (cp_l >> 32) AS cp_h, cp_l & 4294967295 AS cp_l
        FROM sums
    )
    SELECT a.id, a.unit,
           a.debits_posted, COALESCE(t.dpo_h, 0), COALESCE(t.dpo_l, 0),
           a.debits_pending, COALESCE(t.dp_h, 0), COALESCE(t.dp_l, 0),
           a.credits_posted, COALESCE(t.cpo_h, 0), COALESCE(t.cpo_l, 0),
           a.credits_pending, COALESCE(t.cp_h, 0), COALESCE(t.cp_l, 0)
    FROM ledger_accounts a LEFT JOIN totals t ON t.account_id = a.id
    WHERE (a.debits_posted >> 32) <> COALESCE(t.dpo_h, 0)
       OR (a.debits_posted & 4294967295) <> COALESCE(t.dpo_l, 0)
       OR (a.debits_pending >> 32) <> COALESCE(t.dp_h, 0)
       OR (a.debits_pending & 4294967295) <> COALESCE(t.dp_l, 0)
       OR (a.credits_posted >> 32) <> COALESCE(t.cpo_h, 0)
       OR (a.credits_posted & 4294967295) <> COALESCE(t.cpo_l, 0)
       OR (a.credits_pending >> 32) <> COALESCE(t.cp_h, 0)
       OR (a.credits_pending & 4294967295) <> COALESCE(t.cp_l, 0)
    UNION ALL
    SELECT t.account_id, NULL, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
    FROM totals t
    WHERE NOT EXISTS (SELECT 1 FROM ledger_accounts a WHERE a.id = t.account_id)
    """
)
"""Accounts whose stored totals are not their transfers'; then (unit NULL) the accounts that
transfers name but that do not exist — `ledger_transfers` has no foreign keys (see
`ledger.models`), so only this pass would see a transfer into nowhere. The same pass over the
transfers serves both (`totals` is used twice, and so computed once)."""
_STORED = ("debits_posted", "debits_pending", "credits_posted", "credits_pending")
_UNIT_SUMS = text(
    """
    SELECT unit,
           SUM(debits_posted >> 32), SUM(debits_posted & 4294967295),
           SUM(debits_pending >> 32), SUM(debits_pending & 4294967295),
           SUM(credits_posted >> 32), SUM(credits_posted & 4294967295),
           SUM(credits_pending >> 32), SUM(credits_pending & 4294967295)
    FROM ledger_accounts GROUP BY unit
    """
)


def _uuid(value: object) -> uuid.UUID:
    """An id as read by a text query: a UUID on PostgreSQL, 32 hex digits on SQLite."""
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _joined(high: int | Decimal | None, low: int | Decimal | None) -> int:
    """A sum from the sums of its high and low 32-bit halves (PostgreSQL's are numerics)."""
    return (int(high or 0) << 32) + int(low or 0)


_CROSSED = text(
    """
    SELECT id FROM ledger_accounts
    WHERE (debits_must_not_exceed_credits AND debits_pending > credits_posted - debits_posted)
       OR (credits_must_not_exceed_debits AND credits_pending > debits_posted - credits_posted)
    """
)
# Each resolving row (post, void, expiry) against the reservation it resolves: it must exist and
# be a pending transfer, stand as the row says (`posted`, `voided`, `expired`), on the same
# accounts and unit; a post takes at most what was reserved, a void or an expiry all of it.
# Then each reservation marked resolved that no row resolves. One pass, by the unique index on
# `pending_id` and the primary key.
_RESOLUTIONS = text(
    """
    SELECT r.id, r.kind, r.pending_id, p.kind, p.pending_status,
           r.amount, p.amount,
           CASE WHEN p.id IS NULL THEN 1
                WHEN r.debit_account_id = p.debit_account_id
                 AND r.credit_account_id = p.credit_account_id AND r.unit = p.unit THEN 1
                ELSE 0 END
    FROM ledger_transfers r LEFT JOIN ledger_transfers p ON p.id = r.pending_id
    WHERE r.pending_id IS NOT NULL
      AND (p.id IS NULL OR p.kind <> 'pending'
           OR COALESCE(p.pending_status, '') <> CASE r.kind WHEN 'post_pending' THEN 'posted'
                                                            WHEN 'void_pending' THEN 'voided'
                                                            WHEN 'expire_pending' THEN 'expired'
                                                            ELSE '' END
           OR (r.kind = 'post_pending' AND r.amount > p.amount)
           OR (r.kind <> 'post_pending' AND r.amount <> p.amount)
           OR r.debit_account_id <> p.debit_account_id
           OR r.credit_account_id <> p.credit_account_id
           OR r.unit <> p.unit)
    UNION ALL
    SELECT NULL, NULL, p.id, p.kind, p.pending_status, NULL, p.amount, 1
    FROM ledger_transfers p
    WHERE p.kind = 'pending' AND p.pending_status <> 'pending'
      AND NOT EXISTS (SELECT 1 FROM ledger_transfers r WHERE r.pending_id = p.id)
    """
)
_RESOLVED_AS = {"post_pending": "posted", "void_pending": "voided", "expire_pending": "expired"}


def _resolution_fault(
    kind: str | None,
    pending_kind: str | None,
    status: str | None,
    amount: int | None,
    reserved: int | None,
    same_accounts: int,
) -> str:
    """Why a resolving row and its reservation disagree (a row of `_RESOLUTIONS`)."""
    if kind is None:
        return f"is marked {status} but no transfer resolves it"
    if pending_kind is None:
        return "does not exist"
    if pending_kind != "pending":
        return f"is a {pending_kind} transfer, not a pending one"
    faults = []
    if status != _RESOLVED_AS.get(kind):
        faults.append(f"stands {status}")
    if kind == "post_pending" and amount is not None and reserved is not None:
        if amount > reserved:
            faults.append(f"reserved {reserved}, less than the {amount} posted")
    elif amount != reserved:
        faults.append(f"reserved {reserved}, not the {amount} released")
    if not same_accounts:
        faults.append("names other accounts or another unit")
    return "; ".join(faults)


_RESERVATIONS = text(
    """
    SELECT COUNT(*), SUM(CASE WHEN timeout_at IS NOT NULL AND timeout_at <= :now THEN 1 ELSE 0 END)
    FROM ledger_transfers WHERE kind = 'pending' AND pending_status = 'pending'
    """
).bindparams(bindparam("now", type_=LedgerTransfer.__table__.c.timeout_at.type))
_COUNTS = text(
    "SELECT (SELECT COUNT(*) FROM ledger_accounts), (SELECT COUNT(*) FROM ledger_transfers)"
)


@dataclass
class LedgerReport:
    accounts: int = 0
    transfers: int = 0
    units: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Per unit: (debits − credits posted, debits − credits pending); both must be 0."""
    mismatched: list[str] = field(default_factory=list)
    """Accounts whose stored totals differ from their transfers."""
    missing_accounts: list[str] = field(default_factory=list)
    """Accounts that transfers name but that do not exist."""
    bad_resolutions: list[str] = field(default_factory=list)
    """Posts, voids and expiries that disagree with the reservation they resolve, and
    reservations marked resolved that nothing resolves."""
    crossed: list[str] = field(default_factory=list)
    """Bounded accounts past their bound."""
    open_reservations: int = 0
    overdue_reservations: int = 0
    """Reservations past their timeout that the sweep has not expired yet: a count, not a
    violation — between two runs of the sweep (`ledger.service.expire_pending_transfers`) there
    are some on a healthy ledger."""

    @property
    def violations(self) -> list[str]:
        found = [
            f"unit {unit} does not sum to zero: posted {posted:+d}, pending {pending:+d}"
            for unit, (posted, pending) in sorted(self.units.items())
            if posted or pending
        ]
        found += [f"account {m}" for m in self.mismatched]
        found += [f"account {m}" for m in self.missing_accounts]
        found += self.bad_resolutions
        found += [f"account {a} crossed its balance bound" for a in self.crossed]
        return found

    @property
    def ok(self) -> bool:
        return not self.violations


async def verify_ledger(session: AsyncSession, now: datetime | None = None) -> LedgerReport:
    """Everything the ledger promises, checked against the rows (read-only)."""
    report = LedgerReport()
    report.accounts, report.transfers = (await session.execute(_COUNTS)).one()
    for unit, *halves in await session.execute(_UNIT_SUMS):
        dpo, dp, cpo, cp = (_joined(h, lo) for h, lo in zip(halves[0::2], halves[1::2], strict=True))
        report.units[unit] = (dpo - cpo, dp - cp)
    for row in await session.execute(_RECOMPUTED):
        account_id, unit, *triples = row
        if unit is None:
            report.missing_accounts.append(
                f"{_uuid(account_id)} does not exist, yet transfers move its units"
            )
            continue
        diffs = []
        for i, name in enumerate(_STORED):
            stored, high, low = triples[3 * i : 3 * i + 3]
            computed = _joined(high, low)
            if int(stored) != computed:
                diffs.append(f"{name} stored {stored} but transfers give {computed}")
        report.mismatched.append(f"{account_id} ({unit}): " + "; ".join(diffs))
    report.crossed = [str(r[0]) for r in await session.execute(_CROSSED)]
    for resolving_id, kind, pending_id, *rest in await session.execute(_RESOLUTIONS):
        fault = _resolution_fault(kind, *rest)
        subject = f"reservation {_uuid(pending_id)}"
        if resolving_id is not None:
            subject += f" (resolved by {kind} {_uuid(resolving_id)})"
        report.bad_resolutions.append(f"{subject} {fault}")
    open_, overdue = (await session.execute(_RESERVATIONS, {"now": now or utcnow()})).one()
    report.open_reservations, report.overdue_reservations = int(open_ or 0), int(overdue or 0)
    return report


# The trial balance: every posted movement up to an instant (`posted` transfers and the posted
# part of reservations; a reservation still open then is not an entry yet), summed per account
# kind in one pass over `ledger_transfers` — each transfer once on its debit side, once on its
# credit side — grouped by the account's unit, code and key. Accounts held by lines have no key,
# so all of a unit's wallets (or buckets) are one group: the result has a row per operator
# account shard and per kind of line account, never one per line. Sums in 32-bit halves, as
# above.
_TRIAL_BALANCE = text(
    """
    SELECT a.unit, a.code, a.key,
           SUM(m.debit >> 32), SUM(m.debit & 4294967295),
           SUM(m.credit >> 32), SUM(m.credit & 4294967295)
    FROM (
        SELECT debit_account_id AS account_id, amount AS debit, 0 * amount AS credit
        FROM ledger_transfers
        WHERE kind IN ('posted', 'post_pending') AND created_at < :until
        UNION ALL
        SELECT credit_account_id, 0 * amount, amount
        FROM ledger_transfers
        WHERE kind IN ('posted', 'post_pending') AND created_at < :until
    ) m JOIN ledger_accounts a ON a.id = m.account_id
    GROUP BY a.unit, a.code, a.key
    """
).bindparams(bindparam("until", type_=LedgerTransfer.__table__.c.created_at.type))


async def trial_balance_sums(
    session: AsyncSession, until: datetime
) -> dict[tuple[str, str, str | None], tuple[int, int]]:
    """Posted debits and credits before `until`, per (unit, account code, operator account key
    — its shards together — or None for the accounts lines hold). Read-only."""
    found: dict[tuple[str, str, str | None], tuple[int, int]] = {}
    for unit, code, key, dh, dl, ch, cl in await session.execute(
        _TRIAL_BALANCE, {"until": until}
    ):
        name = key.split("#")[0] if key else None
        debits, credits = found.get((unit, code, name), (0, 0))
        found[(unit, code, name)] = (debits + _joined(dh, dl), credits + _joined(ch, cl))
    return found

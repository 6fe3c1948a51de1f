"""Checking the books: the ledger's promises, verified from the stored rows.

`verify_ledger` recomputes every account's four totals from its transfers and compares them
with the stored ones, checks that each unit sums to zero, that no bounded account crossed its
bound and that no reservation outlived its timeout. It reads set-based (one pass over
`ledger_transfers` grouped by account), so it can run on a live database from
`simcharge ledger verify` or the chaos run; on a very large ledger, run it on a replica.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.kit.clock import utcnow
from simcharge.ledger.models import LedgerTransfer

# Posted movements: `posted` transfers and the posted part of a reservation (`post_pending`).
# Reserved: `pending` transfers still pending. Voided and expired reservations move nothing.
_RECOMPUTED = text(
    """
    WITH moves AS (
        SELECT debit_account_id AS account_id,
               SUM(CASE WHEN kind IN ('posted', 'post_pending') THEN amount ELSE 0 END) AS dpo,
               SUM(CASE WHEN kind = 'pending' AND pending_status = 'pending'
                        THEN amount ELSE 0 END) AS dp,
               0 AS cpo, 0 AS cp
        FROM ledger_transfers GROUP BY debit_account_id
        UNION ALL
        SELECT credit_account_id, 0, 0,
               SUM(CASE WHEN kind IN ('posted', 'post_pending') THEN amount ELSE 0 END),
               SUM(CASE WHEN kind = 'pending' AND pending_status = 'pending'
                        THEN amount ELSE 0 END)
        FROM ledger_transfers GROUP BY credit_account_id
    ), totals AS (
        SELECT account_id, SUM(dpo) AS dpo, SUM(dp) AS dp, SUM(cpo) AS cpo, SUM(cp) AS cp
        FROM moves GROUP BY account_id
    )
    SELECT a.id, a.unit,
           a.debits_posted, COALESCE(t.dpo, 0), a.debits_pending, COALESCE(t.dp, 0),
           a.credits_posted, COALESCE(t.cpo, 0), a.credits_pending, COALESCE(t.cp, 0)
    FROM ledger_accounts a LEFT JOIN totals t ON t.account_id = a.id
    WHERE a.debits_posted <> COALESCE(t.dpo, 0) OR a.debits_pending <> COALESCE(t.dp, 0)
       OR a.credits_posted <> COALESCE(t.cpo, 0) OR a.credits_pending <> COALESCE(t.cp, 0)
    """
)
_UNIT_SUMS = text(
    """
    SELECT unit, SUM(debits_posted) - SUM(credits_posted), SUM(debits_pending) - SUM(credits_pending)
    FROM ledger_accounts GROUP BY unit
    """
)
_CROSSED = text(
    """
    SELECT id FROM ledger_accounts
    WHERE (debits_must_not_exceed_credits AND debits_pending + debits_posted > credits_posted)
       OR (credits_must_not_exceed_debits AND credits_pending + credits_posted > debits_posted)
    """
)
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
    crossed: list[str] = field(default_factory=list)
    """Bounded accounts past their bound."""
    open_reservations: int = 0
    overdue_reservations: int = 0
    """Reservations past their timeout that the sweep has not expired yet."""

    @property
    def violations(self) -> list[str]:
        found = [
            f"unit {unit} does not sum to zero: posted {posted:+d}, pending {pending:+d}"
            for unit, (posted, pending) in sorted(self.units.items())
            if posted or pending
        ]
        found += [f"account {m}" for m in self.mismatched]
        found += [f"account {a} crossed its balance bound" for a in self.crossed]
        return found

    @property
    def ok(self) -> bool:
        return not self.violations


async def verify_ledger(session: AsyncSession, now: datetime | None = None) -> LedgerReport:
    """Everything the ledger promises, checked against the rows (read-only)."""
    report = LedgerReport()
    report.accounts, report.transfers = (await session.execute(_COUNTS)).one()
    for unit, posted, pending in await session.execute(_UNIT_SUMS):
        report.units[unit] = (int(posted or 0), int(pending or 0))
    for row in await session.execute(_RECOMPUTED):
        account_id, unit, *pairs = row
        names = ("debits_posted", "debits_pending", "credits_posted", "credits_pending")
        diffs = [
            f"{name} stored {stored} but transfers give {computed}"
            for name, stored, computed in zip(names, pairs[0::2], pairs[1::2], strict=True)
            if int(stored) != int(computed)
        ]
        report.mismatched.append(f"{account_id} ({unit}): " + "; ".join(diffs))
    report.crossed = [str(r[0]) for r in await session.execute(_CROSSED)]
    open_, overdue = (await session.execute(_RESERVATIONS, {"now": now or utcnow()})).one()
    report.open_reservations, report.overdue_reservations = int(open_ or 0), int(overdue or 0)
    return report

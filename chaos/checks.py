"""What must hold after the storm, read from the database (PostgreSQL)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import text

from simcharge.db import Database
from simcharge.ledger.audit import verify_ledger

CREDITED = ("fulfilled", "refunded", "partially_refunded")

# Per order: what the sandbox (the provider) says, what the order says, and how many times the
# sale was booked (the transfer from the provider's clearing account, one per credited order).
_ORDERS = text(
    """
    SELECT o.id, o.state, o.price, s.state AS provider_state,
           COUNT(t.id) AS sales, COALESCE(SUM(t.amount), 0) AS sold
    FROM orders o
    JOIN sandbox_payments s ON s.reference = o.reference
    LEFT JOIN ledger_transfers t
      ON t.reference = 'order:' || o.id::text AND t.code = 'topup'
     AND t.debit_account_id IN (SELECT id FROM ledger_accounts WHERE code = 'clearing')
    GROUP BY o.id, o.state, o.price, s.state
    """
)
_JOBS = text(
    """
    SELECT status, COUNT(*), SUM(CASE WHEN run_at <= now() THEN 1 ELSE 0 END)
    FROM outbox_jobs GROUP BY status
    """
)


@dataclass
class Verdict:
    facts: dict[str, object] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            self.violations.append(what)


async def paid_but_pending(db: Database) -> list[str]:
    """Orders the sandbox reports paid that are still waiting to be credited."""
    async with db.read() as s:
        rows = await s.execute(
            text(
                "SELECT o.id FROM orders o JOIN sandbox_payments s ON s.reference = o.reference"
                " WHERE s.state = 'paid' AND o.state = 'pending'"
            )
        )
        return [str(r[0]) for r in rows]


async def due_jobs(db: Database) -> int:
    async with db.read() as s:
        n = await s.execute(
            text(
                "SELECT COUNT(*) FROM outbox_jobs WHERE status IN ('pending', 'running')"
                " AND run_at <= now()"
            )
        )
        return int(n.scalar_one())


async def verify(db: Database) -> Verdict:
    v = Verdict()
    async with db.read() as s:
        ledger = await verify_ledger(s)
        orders = (await s.execute(_ORDERS)).all()
        jobs = {row[0]: (int(row[1]), int(row[2] or 0)) for row in await s.execute(_JOBS)}
        events = (
            await s.execute(
                text("SELECT COUNT(*) FROM provider_events")
            )
        ).one()
        refunds = dict((await s.execute(text("SELECT state, COUNT(*) FROM refunds GROUP BY state"))).all())

    v.facts["ledger"] = f"{ledger.accounts} accounts, {ledger.transfers} transfers"
    for unit, (posted, pending) in sorted(ledger.units.items()):
        v.check(posted == 0 and pending == 0, f"unit {unit} does not sum to zero")
    v.violations += [f"ledger: {m}" for m in ledger.mismatched]
    v.violations += [f"ledger: account {a} crossed its bound" for a in ledger.crossed]
    v.facts["open reservations"] = ledger.open_reservations
    v.check(ledger.open_reservations == 0, f"{ledger.open_reservations} reservation(s) left open")

    by_state: dict[str, int] = {}
    paid = 0
    for order_id, state, price, provider_state, sales, sold in orders:
        by_state[state] = by_state.get(state, 0) + 1
        if provider_state == "paid":
            paid += 1
            v.check(state in CREDITED, f"order {order_id}: paid at the provider but {state}")
            v.check(
                sales == 1 and sold == price,
                f"order {order_id}: paid once, booked {sales} time(s) for {sold} (price {price})",
            )
        else:
            v.check(state not in CREDITED, f"order {order_id}: {provider_state} but {state}")
            v.check(sales == 0, f"order {order_id}: not paid but booked {sales} time(s)")
    v.facts["orders"] = dict(sorted(by_state.items()))
    v.facts["paid at the sandbox"] = paid
    v.facts["provider events stored"] = events[0]
    v.facts["refunds"] = refunds
    v.check(refunds.get("pending", 0) == 0, f"{refunds.get('pending')} refund(s) still pending")

    v.facts["jobs"] = {k: n for k, (n, _) in sorted(jobs.items())}
    due = sum(d for k, (_, d) in jobs.items() if k in ("pending", "running"))
    v.check(due == 0, f"{due} job(s) due but not run: the outbox did not drain")
    v.check("running" not in jobs, f"{jobs.get('running', (0, 0))[0]} job(s) left running")
    v.check("dead" not in jobs, f"{jobs.get('dead', (0, 0))[0]} dead job(s)")
    return v

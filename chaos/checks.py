"""What must hold after the storm, read from the database (PostgreSQL)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import text

from chaos.customers import ServerError
from simcharge.db import Database
from simcharge.ledger.audit import verify_ledger

CREDITED = ("fulfilled", "refunded", "partially_refunded")
MIN_PAID = 5
"""A run in which fewer orders were paid proves nothing: it fails."""

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
# Pending jobs not due yet, by kind: retries waiting out their backoff (attempts > 0) — work
# not done — and jobs deferred on purpose (a refund's follow-up).
_LATER = text(
    """
    SELECT kind, attempts > 0 AS retry, COUNT(*) FROM outbox_jobs
    WHERE status = 'pending' AND run_at > now() GROUP BY kind, attempts > 0
    """
)


@dataclass
class Verdict:
    facts: dict[str, object] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            self.violations.append(what)


RECOVERY_SECONDS = 20.0
"""After PostgreSQL is back, how long the processes may still find the database unavailable
(the pools notice dropped connections as they use them)."""


def server_error_verdict(
    v: Verdict, errors: Iterable[ServerError], restarts: Iterable[tuple[float, float]]
) -> None:
    """5xx answers the customers got. One kind is expected: `503 service-unavailable` (the
    database cannot be reached: nothing was done, the client retries) while PostgreSQL restarts
    and shortly after. Every other one — a 500, a 503 at any other time — is a violation."""
    windows = list(restarts)
    expected: Counter[str] = Counter()
    unexpected: Counter[str] = Counter()
    for e in errors:
        during_restart = any(start <= e.at <= end + RECOVERY_SECONDS for start, end in windows)
        if e.status == 503 and e.type.endswith("/service-unavailable") and during_restart:
            expected[e.route] += 1
        else:
            unexpected[f"{e.status} {e.type} on {e.route}"] += 1
    v.facts["503 while PostgreSQL restarted (retried)"] = sum(expected.values())
    v.violations += [f"server error: {what} ({n}×)" for what, n in sorted(unexpected.items())]


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


async def bring_retries_forward(db: Database) -> int:
    """Make the retries that wait out their backoff due now, so that the drain runs them (the
    run cannot wait up to an hour for the last backoff). Returns how many."""
    async with db.transaction() as s:
        result = await s.execute(
            text(
                "UPDATE outbox_jobs SET run_at = now() WHERE status = 'pending'"
                " AND attempts > 0 AND run_at > now()"
            )
        )
        return int(getattr(result, "rowcount", 0) or 0)


async def open_reservations(db: Database) -> int:
    """Reservations still held, and charging sessions still open (the sweep times them out)."""
    async with db.read() as s:
        n = await s.execute(
            text(
                "SELECT (SELECT COUNT(*) FROM ledger_transfers WHERE pending_status = 'pending')"
                " + (SELECT COUNT(*) FROM charging_sessions WHERE state = 'open')"
            )
        )
        return int(n.scalar_one())


async def verify(db: Database, *, min_paid: int = MIN_PAID) -> Verdict:
    """Every promise, checked on the database as the run left it."""
    v = Verdict()
    async with db.read() as s:
        ledger = await verify_ledger(s)
        orders = (await s.execute(_ORDERS)).all()
        jobs = {row[0]: (int(row[1]), int(row[2] or 0)) for row in await s.execute(_JOBS)}
        later = (await s.execute(_LATER)).all()
        events = (
            await s.execute(
                text("SELECT COUNT(*) FROM provider_events")
            )
        ).one()
        refunds = dict(
            (await s.execute(text("SELECT state, COUNT(*) FROM refunds GROUP BY state"))).all()
        )
        sessions = dict(
            (
                await s.execute(
                    text("SELECT state, COUNT(*) FROM charging_sessions GROUP BY state")
                )
            ).all()
        )
        usage = (await s.execute(text("SELECT COUNT(*) FROM usage_records"))).scalar_one()

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
    v.check(
        paid >= min_paid,
        f"only {paid} order(s) paid: too little happened to prove anything (at least {min_paid})",
    )
    v.facts["paid at the sandbox"] = paid
    v.facts["provider events stored"] = events[0]
    v.facts["refunds"] = refunds
    v.check(refunds.get("pending", 0) == 0, f"{refunds.get('pending')} refund(s) still pending")

    v.facts["charging sessions"] = sessions
    v.facts["usage records"] = usage
    v.check(sessions.get("open", 0) == 0, f"{sessions.get('open')} charging session(s) still open")
    v.facts["jobs"] = {k: n for k, (n, _) in sorted(jobs.items())}
    due = sum(d for k, (_, d) in jobs.items() if k in ("pending", "running"))
    v.check(due == 0, f"{due} job(s) due but not run: the outbox did not drain")
    v.check("running" not in jobs, f"{jobs.get('running', (0, 0))[0]} job(s) left running")
    v.check("dead" not in jobs, f"{jobs.get('dead', (0, 0))[0]} dead job(s)")
    retrying = {kind: int(n) for kind, retry, n in later if retry}
    v.check(
        not retrying,
        f"{sum(retrying.values())} failed job(s) still waiting for a retry {retrying}: "
        "the outbox did not drain",
    )
    deferred = {kind: int(n) for kind, retry, n in later if not retry}
    if deferred:
        v.facts["jobs scheduled for later"] = deferred
    return v

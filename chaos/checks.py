"""What must hold after the storm, read from the database (PostgreSQL)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text

from chaos.customers import LOGIN, ServerError, SignIn
from simcharge.db import Database
from simcharge.ledger.audit import verify_ledger

CREDITED = ("fulfilled", "refunded", "partially_refunded")
MIN_PAID = 5
"""A run in which fewer orders were paid proves nothing: it fails."""
POSTED = ("posted", "post_pending")
"""Transfers whose money moved (a pending one moves only through its `post_pending`)."""

# Per order: the order, its line (the wallet its plan credits) and what the sandbox (the
# provider) says — a LEFT JOIN: an order the provider has no payment for is unpaid, and must
# stay in every check.
_ORDERS = text(
    """
    SELECT o.id::text, o.state, o.price, o.fee, o.total, o.currency, o.refunded_amount,
           o.fulfilled_at IS NOT NULL AS fulfilled, o.line_id::text, o.plan_snapshot,
           l.currency AS line_currency, l.wallet_account_id::text,
           s.state AS provider_state, s.amount AS captured, s.currency AS captured_currency,
           s.refunded AS provider_refunded
    FROM orders o
    JOIN lines l ON l.id = o.line_id
    LEFT JOIN sandbox_payments s ON s.reference = o.reference
    """
)
# Every transfer naming an order (`order:<id>`), with the codes of its accounts and the line
# that holds the credited one, if any.
_ORDER_TRANSFERS = text(
    """
    SELECT substr(t.reference, 7) AS order_id, t.kind, t.amount, t.unit, t.code,
           t.credit_account_id::text, d.code AS debit_code, c.code AS credit_code,
           c.line_id::text AS credit_line
    FROM ledger_transfers t
    LEFT JOIN ledger_accounts d ON d.id = t.debit_account_id
    LEFT JOIN ledger_accounts c ON c.id = t.credit_account_id
    WHERE t.reference LIKE 'order:%'
    """
)
_REFUNDS = text("SELECT id::text, order_id::text, state, amount FROM refunds")
# Every transfer naming a refund (`refund:<id>`): the money back into the provider's clearing
# account, and the units and credit taken back from the line.
_REFUND_TRANSFERS = text(
    """
    SELECT substr(t.reference, 8) AS refund_id, t.kind, t.amount, c.code AS credit_code
    FROM ledger_transfers t
    LEFT JOIN ledger_accounts c ON c.id = t.credit_account_id
    WHERE t.reference LIKE 'refund:%'
    """
)
# A customer's accounts (a line's wallet and buckets) must be bounded — debits never above
# credits — by their flag, and in fact: the flag is not trusted.
_LINE_ACCOUNTS_UNBOUNDED = text(
    """
    SELECT id::text, code, debits_must_not_exceed_credits,
           debits_posted + debits_pending - credits_posted AS over
    FROM ledger_accounts
    WHERE line_id IS NOT NULL
      AND (NOT debits_must_not_exceed_credits
           OR debits_posted + debits_pending > credits_posted)
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
REDIS_ROUTES = frozenset({f"POST {LOGIN}"})
"""What the chaos customers do that Redis counts (the sign-in limit); nothing else asks it."""
REDIS_EDGE_SECONDS = 2.0
"""Before Redis is gone: a sign-in counting as it dies is refused too (a 1 s deadline)."""
REDIS_RECOVERY_SECONDS = 10.0
"""After Redis starts again, how long a sign-in may still be refused (it takes a moment to
accept connections, and a pooled connection it dropped is tried once more)."""
STORM_SLACK_SECONDS = 15.0
"""After a provider storm ends, how long an answer it delayed (a timeout, a slow answer) may
still arrive."""
UNAVAILABLE = "/service-unavailable"
PROVIDER_UNAVAILABLE = "/payment-provider-unavailable"


def _within(at: float, windows: Iterable[tuple[float, float]], before: float, after: float) -> bool:
    return any(start - before <= at <= end + after for start, end in windows)


def server_error_verdict(
    v: Verdict,
    errors: Iterable[ServerError],
    restarts: Iterable[tuple[float, float]],
    *,
    redis_outages: Iterable[tuple[float, float]] = (),
    storms: Iterable[tuple[float, float]] = (),
) -> None:
    """5xx answers the customers got. Three kinds are expected, each only in its fault's
    window: `503 service-unavailable` (the database cannot be reached: nothing was done, the
    client retries) while PostgreSQL restarts and shortly after; `503 service-unavailable` to
    a sign-in while Redis is down and shortly after (the rate limits fail closed — README
    "Redis"); `503 payment-provider-unavailable` while the provider fails and shortly after.
    Every other one — a 500, a 503 at any other time or on any other route — is a violation."""
    windows, outages, failing = list(restarts), list(redis_outages), list(storms)
    expected: Counter[str] = Counter()
    redis: Counter[str] = Counter()
    provider: Counter[str] = Counter()
    unexpected: Counter[str] = Counter()
    for e in errors:
        if e.status == 503 and e.type.endswith(UNAVAILABLE) and _within(
            e.at, windows, 0, RECOVERY_SECONDS
        ):
            expected[e.route] += 1
        elif (
            e.status == 503 and e.type.endswith(UNAVAILABLE) and e.route in REDIS_ROUTES
            and _within(e.at, outages, REDIS_EDGE_SECONDS, REDIS_RECOVERY_SECONDS)
        ):
            redis[e.route] += 1
        elif e.status == 503 and e.type.endswith(PROVIDER_UNAVAILABLE) and _within(
            e.at, failing, 0, STORM_SLACK_SECONDS
        ):
            provider[e.route] += 1
        else:
            unexpected[f"{e.status} {e.type} on {e.route}"] += 1
    v.facts["503 while PostgreSQL restarted (retried)"] = sum(expected.values())
    if outages:
        v.facts["503 to sign-ins while Redis was down"] = sum(redis.values())
    if failing:
        v.facts["503 while the provider failed (retried)"] = dict(sorted(provider.items()))
    v.violations += [f"server error: {what} ({n}×)" for what, n in sorted(unexpected.items())]


def sign_in_verdict(
    v: Verdict, sign_ins: Iterable[SignIn], outages: Iterable[tuple[float, float]], *,
    recovery: float = REDIS_RECOVERY_SECONDS,
) -> None:
    """Sign-ins against the Redis outages (each `(gone, starting again)`). One sent once Redis
    was gone and answered before it was started again could not be counted: it must have been
    refused with `503 service-unavailable` and `Retry-After` (fail closed); a sign-in let
    through then is a violation. After each outage one must succeed again (recovered), and a
    session a sign-in opened must be served and signed out like any other. An outage during
    which no sign-in was refused proved nothing: a violation too."""
    tried = list(sign_ins)
    windows = list(outages)
    refused = 0
    for s in tried:
        if s.session_works is False:
            v.violations.append("a session just opened by a sign-in was not served or not "
                                "signed out")
        if not any(gone <= s.sent and s.answered <= starting for gone, starting in windows):
            continue
        if s.status == 200:
            v.violations.append(
                "a sign-in was let through while Redis was down (the rate limits must fail "
                "closed)"
            )
        elif s.status != 503 or not s.type.endswith(UNAVAILABLE):
            v.violations.append(
                f"a sign-in while Redis was down was answered {s.status} {s.type} (expected "
                "503 service-unavailable)"
            )
        elif not s.retry_after:
            v.violations.append("a sign-in refused while Redis was down had no Retry-After")
        else:
            refused += 1
    v.facts["sign-ins"] = dict(sorted(Counter(str(s.status) for s in tried).items()))
    if not windows:
        return
    v.facts["sign-ins refused while Redis was down"] = refused
    v.check(refused > 0, "no sign-in was refused while Redis was down: the outage proved nothing")
    for i, (_, starting) in enumerate(windows):
        after = windows[i + 1][0] if i + 1 < len(windows) else float("inf")
        v.check(
            any(
                s.status == 200 and starting + recovery <= s.sent < after
                for s in tried
            ),
            f"no sign-in succeeded after Redis was started again (outage {i + 1})",
        )


@dataclass(frozen=True)
class Readiness:
    """What a web process's `/readyz` answered, during a Redis outage or after it."""

    process: str
    phase: str
    """"down": Redis is gone; "back": Redis answers again."""
    status: int
    """0: no answer (the process was being restarted)."""
    redis: str | None
    """The answer's `redis` member ("ok", "unreachable")."""


def readiness_verdict(v: Verdict, probes: Iterable[Readiness]) -> None:
    """While Redis is down, each web process that answers must say it is not ready (503,
    `"redis": "unreachable"`): it would refuse every sign-in. Once Redis is back, each that
    answers must find it again (`"redis": "ok"` — its status may still be 503 if the database
    is away meanwhile). A process that does not answer (the kill storm is restarting it) is not
    judged, but at least one must answer in each phase."""
    seen = list(probes)
    if not seen:
        return
    down = [p for p in seen if p.phase == "down" and p.status]
    back = [p for p in seen if p.phase == "back" and p.status]
    for p in down:
        v.check(
            p.status == 503 and p.redis == "unreachable",
            f"{p.process} /readyz answered {p.status} (redis: {p.redis}) while Redis was down "
            "(expected 503, redis unreachable)",
        )
    for p in back:
        v.check(p.redis == "ok", f"{p.process} /readyz still answered {p.status} (redis: "
                f"{p.redis}) after Redis was back")
    v.check(bool(down), "no web process answered /readyz while Redis was down")
    v.check(bool(back), "no web process answered /readyz after Redis was back")
    v.facts["/readyz while Redis was down"] = dict(
        sorted(Counter(str(p.status) for p in down).items())
    )


def storm_verdict(
    v: Verdict, faults: dict[str, dict[str, int]], storms: Iterable[tuple[float, float]]
) -> None:
    """A provider storm that injected no fault proved nothing: a violation."""
    if not list(storms):
        return
    v.facts["provider faults injected"] = faults
    v.check(
        any(n for by_fault in faults.values() for n in by_fault.values()),
        "the provider storm injected no fault: no provider call was made while it lasted",
    )


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


async def webhook_deliveries(db: Database, sink: str) -> dict[str, int]:
    """The sandbox's webhooks delivered (done), to simcharge and to `sink` (the URL where a
    dropped payment's webhooks went): events, and the copies beyond the first of each —
    duplicates."""
    async with db.read() as s:
        rows = (
            await s.execute(
                text(
                    "SELECT payload->>'url' = :sink, COUNT(*),"
                    " COUNT(DISTINCT payload->'event'->>'id') FROM outbox_jobs"
                    " WHERE kind = 'sandbox.deliver_webhook' AND status = 'done' GROUP BY 1"
                ),
                {"sink": sink},
            )
        ).all()
    found = {"delivered": 0, "duplicates delivered": 0, "dropped": 0}
    for to_sink, copies, distinct in rows:
        if to_sink:
            found["dropped"] += int(copies)
        else:
            found["delivered"] += int(copies)
            found["duplicates delivered"] += int(copies) - int(distinct)
    return found


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


@dataclass
class _Order:
    id: str
    state: str
    price: int
    fee: int
    total: int
    currency: str
    refunded_amount: int
    fulfilled: bool
    line_id: str
    plan: dict[str, Any]
    line_currency: str
    wallet: str
    provider_state: str | None
    """None: the provider has no payment for the order (unpaid)."""
    captured: int | None
    captured_currency: str | None
    provider_refunded: int | None


@dataclass
class _Transfer:
    kind: str
    amount: int
    unit: str
    code: str
    credit_account: str
    debit_code: str | None
    credit_code: str | None
    credit_line: str | None


def _plan(value: object) -> dict[str, Any]:
    if isinstance(value, str):
        value = json.loads(value)
    return value if isinstance(value, dict) else {}


def _order_verdict(
    v: Verdict, o: _Order, transfers: list[_Transfer], money_back: int, failed: list[str]
) -> None:
    """One order against what its provider says and what its plan grants."""
    posted = [t for t in transfers if t.kind in POSTED]
    from_clearing = [t for t in posted if t.debit_code == "clearing"]
    sales = [t for t in from_clearing if t.code == "topup"]
    fees = [t for t in from_clearing if t.code == "fee"]
    taken = sum(t.amount for t in from_clearing)
    sold = sum(t.amount for t in sales)
    what = o.provider_state or "no payment at the provider"
    if o.provider_state == "paid":
        v.check(o.state in CREDITED, f"order {o.id}: paid at the provider but {o.state}")
        v.check(
            len(sales) == 1 and sold == o.price,
            f"order {o.id}: paid once, booked {len(sales)} time(s) for {sold} (price {o.price})",
        )
        v.check(
            o.captured == o.total and o.captured_currency == o.currency,
            f"order {o.id}: the provider captured {o.captured} {o.captured_currency}, the order"
            f" is for {o.total} {o.currency}",
        )
        v.check(
            taken == o.captured,
            f"order {o.id}: {taken} taken from the provider's clearing account for"
            f" {o.captured} captured",
        )
        if o.state in CREDITED:
            fee_sum = sum(t.amount for t in fees)
            want = 1 if o.fee else 0
            v.check(
                len(fees) == want and fee_sum == o.fee,
                f"order {o.id}: fee booked {len(fees)} time(s) for {fee_sum} (fee {o.fee})",
            )
    else:
        v.check(o.state not in CREDITED, f"order {o.id}: {what} but {o.state}")
        v.check(not sales, f"order {o.id}: not paid but booked {len(sales)} time(s)")
        v.check(
            not posted,
            f"order {o.id}: {what}, yet {len(posted)} ledger transfer(s) posted for it",
        )

    # The customer's side: what went to the line's wallet and buckets. `applied` is finance
    # putting an uncredited payment on the wallet by hand (none in a chaos run, which has no
    # staff doing so) — not the plan's credit.
    credits = [t for t in posted if t.credit_line is not None and t.code != "applied"]
    for account, n in Counter(t.credit_account for t in credits).items():
        v.check(n == 1, f"order {o.id}: line account {account} credited {n} times")
    for t in credits:
        v.check(
            t.credit_line == o.line_id,
            f"order {o.id}: credited account {t.credit_account} of another line",
        )
    if o.fulfilled or o.state in CREDITED:
        wallet = int((o.plan.get("wallet_credit") or {}).get(o.line_currency, 0))
        want_wallet = [wallet] if wallet else []
        got_wallet = sorted(t.amount for t in credits if t.credit_account == o.wallet)
        v.check(
            got_wallet == want_wallet,
            f"order {o.id}: wallet credited {got_wallet}, the plan grants {want_wallet}",
        )
        want_buckets = sorted(
            (str(g["unit"]), int(g["amount"])) for g in o.plan.get("buckets") or []
        )
        got_buckets = sorted((t.unit, t.amount) for t in credits if t.credit_account != o.wallet)
        v.check(
            got_buckets == want_buckets,
            f"order {o.id}: buckets granted {got_buckets}, the plan grants {want_buckets}",
        )
    else:
        v.check(not credits, f"order {o.id}: {o.state}, yet its line credited {len(credits)}×")

    # Refunds: what the ledger gave back is what the provider refunded, never more than it
    # captured, and the order says the same.
    refunded = o.provider_refunded or 0
    v.check(
        money_back == refunded,
        f"order {o.id}: the ledger gave back {money_back}, the provider refunded {refunded}",
    )
    v.check(
        refunded <= (o.captured if o.provider_state == "paid" and o.captured else 0),
        f"order {o.id}: the provider refunded {refunded} of {o.captured or 0} captured",
    )
    v.check(
        o.refunded_amount == refunded,
        f"order {o.id}: says {o.refunded_amount} refunded, the provider refunded {refunded}",
    )
    for refund_id in failed:
        v.check(False, f"order {o.id}: refund {refund_id} failed (sandbox refunds never fail)")


async def verify(
    db: Database, *, min_paid: int = MIN_PAID, dropped: Collection[str] = ()
) -> Verdict:
    """Every promise, checked on the database as the run left it. `dropped`: the orders whose
    webhooks were all lost (only the return, "check now" and reconciliation could credit them)."""
    v = Verdict()
    async with db.read() as s:
        ledger = await verify_ledger(s)
        orders = [_Order(*row) for row in (await s.execute(_ORDERS)).all()]
        order_transfers = (await s.execute(_ORDER_TRANSFERS)).all()
        refund_rows = (await s.execute(_REFUNDS)).all()
        refund_transfers = (await s.execute(_REFUND_TRANSFERS)).all()
        unbounded = (await s.execute(_LINE_ACCOUNTS_UNBOUNDED)).all()
        jobs = {row[0]: (int(row[1]), int(row[2] or 0)) for row in await s.execute(_JOBS)}
        later = (await s.execute(_LATER)).all()
        events = (
            await s.execute(
                text("SELECT COUNT(*) FROM provider_events")
            )
        ).one()
        refunds: dict[str, int] = dict(
            (await s.execute(text("SELECT state, COUNT(*) FROM refunds GROUP BY state"))).all()
        )
        sessions: dict[str, int] = dict(
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
    for account, code, bounded, over in unbounded:
        v.check(bounded, f"line account {account} ({code}): debits may exceed credits (no bound)")
        v.check(over <= 0, f"line account {account} ({code}): overdrawn by {over}")
    v.facts["open reservations"] = ledger.open_reservations
    v.check(ledger.open_reservations == 0, f"{ledger.open_reservations} reservation(s) left open")

    by_order: dict[str, list[_Transfer]] = {}
    for order_id, *rest in order_transfers:
        by_order.setdefault(order_id, []).append(_Transfer(*rest))
    refund_order = {refund_id: order_id for refund_id, order_id, _, _ in refund_rows}
    failed: dict[str, list[str]] = {}
    for refund_id, order_id, state, _ in refund_rows:
        if state == "failed":
            failed.setdefault(order_id, []).append(refund_id)
    money_back: Counter[str] = Counter()
    orphans: Counter[str] = Counter()
    for refund_id, kind, amount, credit_code in refund_transfers:
        owner = refund_order.get(refund_id)
        if owner is None:
            orphans[refund_id] += 1
        elif kind in POSTED and credit_code == "clearing":
            money_back[owner] += amount
    v.violations += [
        f"ledger: {n} transfer(s) for refund {r}, which does not exist"
        for r, n in sorted(orphans.items())
    ]

    known = {o.id for o in orders}
    for order_id in sorted(set(by_order) - known):
        v.check(False, f"ledger: {len(by_order[order_id])} transfer(s) for order {order_id},"
                " which does not exist")
    by_state: dict[str, int] = {}
    paid = 0
    for o in orders:
        o.plan = _plan(o.plan)
        by_state[o.state] = by_state.get(o.state, 0) + 1
        paid += o.provider_state == "paid"
        _order_verdict(v, o, by_order.get(o.id, []), money_back[o.id], failed.get(o.id, []))
    v.facts["orders"] = dict(sorted(by_state.items()))
    v.check(
        paid >= min_paid,
        f"only {paid} order(s) paid: too little happened to prove anything (at least {min_paid})",
    )
    if dropped:
        lost = [o for o in orders if o.id in set(dropped)]
        lost_paid = [o for o in lost if o.provider_state == "paid"]
        v.facts["orders whose webhooks were all dropped"] = {
            "placed": len(lost),
            "paid": len(lost_paid),
            "credited": sum(o.fulfilled for o in lost_paid),
        }
        for o in lost_paid:
            v.check(
                o.fulfilled and o.state in CREDITED,
                f"order {o.id}: paid, every webhook dropped, and not credited ({o.state})",
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

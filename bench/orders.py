"""`topup_fulfil_webhook`: a signed sandbox webhook for a pending order, POSTed to simcharge
served by uvicorn, answered once the order is credited: the event stored, the payment marked
paid, the ledger transfers, validity, the receipt and notice jobs in the outbox — all of
fulfilment (the receipt is numbered later, when the worker issues it). An operation counts only
if the answer says the order was credited (`Simcharge-Outcome: fulfilled`); any other outcome
(stored for later, already, flagged) fails it."""

from __future__ import annotations

import itertools
import json
import random
import time
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from bench.driver import Operation
from simcharge.catalog.repository import CatalogRepository
from simcharge.catalog.service import DEMO_CATALOG, load_catalog, read_catalog_file
from simcharge.kit.clock import utcnow
from simcharge.kit.ids import uuid7
from simcharge.lines.models import LineState
from simcharge.lines.service import NewLine, open_line
from simcharge.orders.models import Order, Payment, SandboxPayment
from simcharge.orders.service import new_reference, plan_snapshot
from simcharge.payments.sandbox import MERCHANT, sign

if TYPE_CHECKING:
    from bench.entries import BenchContext

ORDERS = 20_000
LINES = 1_000
SECRET = "bench-sandbox-secret"  # noqa: S105 - the bench server's own, made up


async def _seed(s: AsyncSession, count: int = ORDERS) -> list[dict[str, Any]]:
    """The demo catalog, a payer, lines, and `count` pending sandbox orders; returns the
    webhooks' payment objects."""
    from simcharge.accounts.models import Account

    await load_catalog(s, read_catalog_file(DEMO_CATALOG))
    repo = CatalogRepository(s)
    plan = await repo.plan_by_code("starter-10")
    assert plan is not None
    prices = await repo.prices_of(plan.id)
    snapshot = plan_snapshot(plan, prices)
    account = Account(id=uuid7(), username="bench-payer", password_hash="!")  # noqa: S106 - no login
    s.add(account)
    await s.flush()
    lines = []
    for i in range(LINES):
        msisdn = f"+1206555{i:04d}"
        lines.append(await open_line(s, NewLine(msisdn=msisdn, iccid=f"89019990{i:011d}",
                                                currency="USD"),
                                     account_id=account.id, state=LineState.active))
    now = utcnow()
    expires = now + timedelta(days=1)
    objects: list[dict[str, Any]] = []
    orders, payments, sandbox_rows = [], [], []
    for i in range(count):
        line = lines[i % LINES]
        order_id, reference, sid = uuid7(), new_reference(), f"sbx_{uuid.uuid4().hex[:24]}"
        orders.append({
            "id": order_id, "reference": reference, "account_id": account.id, "line_id": line.id,
            "msisdn": line.msisdn, "plan_id": plan.id, "plan_code": plan.code,
            "plan_version": plan.version, "plan_snapshot": snapshot, "method_code": "sandbox",
            "provider": "sandbox", "currency": "USD", "price": prices["USD"], "fee": 0,
            "total": prices["USD"], "state": "pending", "language": "en", "created_at": now,
            "expires_at": expires, "refunded_amount": 0,
        })
        payments.append({
            "id": uuid7(), "order_id": order_id, "provider": "sandbox", "flow": "redirect",
            "provider_ref": sid, "state": "pending", "created_at": now, "updated_at": now,
            "next_check_at": expires, "checks": 0,
        })
        sandbox_rows.append({
            "id": sid, "reference": reference, "amount": prices["USD"], "currency": "USD",
            "description": "bench", "state": "paid", "return_url": "-", "cancel_url": "-",
            "notify_url": "-", "language": "en", "expires_at": expires, "refunded": 0,
            "created_at": now, "paid_at": now,
        })
        objects.append({"id": sid, "reference": reference, "amount": prices["USD"],
                        "currency": "USD", "state": "paid", "refunded": 0, "merchant": MERCHANT,
                        "paid_at": now.isoformat()})
    for table, rows in ((Order, orders), (Payment, payments), (SandboxPayment, sandbox_rows)):
        for start in range(0, len(rows), 2000):
            await s.execute(insert(table), rows[start:start + 2000])
    return objects


async def topup_fulfil_webhook(ctx: BenchContext) -> Operation:
    objects = await ctx.database().run(_seed)
    base = await ctx.serve("simcharge.app:serve_app", factory=True, env={
        "SIMCHARGE_ENV": "development",
        "SIMCHARGE_DATABASE_URL": ctx.sqlalchemy_url(),
        "SIMCHARGE_DB_POOL_SIZE": str(ctx.concurrency),
        "SIMCHARGE_WORKER_IN_PROCESS": "false",
        "SIMCHARGE_SANDBOX_ENABLED": "true",
        "SIMCHARGE_SANDBOX_SECRET": SECRET,
        "SIMCHARGE_LOG_LEVEL": "warning",
        "SIMCHARGE_SECRET_KEY": "bench-secret-key-bench-secret-key-bench-secret-key",
    })
    client = ctx.client(base)
    queue = iter(objects)
    counter = itertools.count()

    async def op(_rng: random.Random) -> None:
        try:
            obj = next(queue)
        except StopIteration:
            raise RuntimeError(f"all {ORDERS} bench orders are fulfilled; raise ORDERS") from None
        event = {"id": f"evt_bench_{next(counter)}", "type": "payment.succeeded",
                 "created": int(time.time()), "data": {"object": obj}}
        body = json.dumps(event, separators=(",", ":")).encode()
        r = await client.post("/api/v1/webhooks/sandbox", content=body, headers={
            "content-type": "application/json", "sandbox-signature": sign(SECRET, body)})
        outcome = r.headers.get("simcharge-outcome")
        if r.status_code != 200 or outcome != "fulfilled":
            raise RuntimeError(f"webhook answered {r.status_code} ({outcome}): {r.text[:200]}")

    return op

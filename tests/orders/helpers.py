"""A shop to test orders in: the demo catalog, payers with lines and sessions, the sandbox, and
a worker whose webhooks reach the app over HTTP (in process)."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.auth.client import ClientInfo
from simcharge.auth.service import policy
from simcharge.auth.sessions import open_session
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.ledger.models import LedgerAccount, LedgerTransfer
from simcharge.lines.models import Line, LineState
from simcharge.orders.models import Order, SandboxPayment
from simcharge.payments.sandbox import MERCHANT, sign
from simcharge.worker.runner import Worker
from tests.factories import create_account, create_line

_keys = itertools.count(1)


@dataclass
class Payer:
    account_id: uuid.UUID
    token: str
    line: Line
    email: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def idem() -> dict[str, str]:
    return {"Idempotency-Key": f"key-{next(_keys)}-{uuid.uuid4().hex[:8]}"}


async def new_payer(
    db: Database, settings: Settings, *, language: str = "en", currency: str = "USD",
    line_state: LineState = LineState.active, verified_email: bool = True,
) -> Payer:
    async def run(s: AsyncSession) -> Payer:
        n = uuid.uuid4().hex[:10]
        email = f"payer{n}@example.com"
        account = await create_account(
            s, username=f"payer{n}", email=email, language=language,
            email_verified_at=utcnow() if verified_email else None,
        )
        line = await create_line(s, account_id=account.id, currency=currency, state=line_state)
        issued = await open_session(
            s, settings.secret_key, account_id=account.id,
            client=ClientInfo(ip="198.51.100.7", user_agent="pytest"),
            policy=policy(settings), now=utcnow(),
        )
        return Payer(account.id, issued.token, line, email)

    return await db.run(run)


async def place(client: httpx.AsyncClient, payer: Payer, *, plan: str = "traveller-20",
                method: str = "sandbox", **extra: Any) -> dict[str, Any]:
    body = {"plan": plan, "method": method, "line_id": str(payer.line.id), **extra}
    if "msisdn" in extra:
        body.pop("line_id")
    r = await client.post("/api/v1/orders", json=body, headers={**payer.auth, **idem()})
    assert r.status_code == 201, r.text
    order: dict[str, Any] = r.json()
    return order


def sandbox_id(order: dict[str, Any]) -> str:
    url = order["next_action"]["url"]
    assert "/sandbox/pay/" in url
    return str(url.rsplit("/", 1)[-1])


async def pay_at_sandbox(client: httpx.AsyncClient, settings: Settings, order: dict[str, Any],
                         action: str = "pay") -> httpx.Response:
    """What the payer does on the hosted page (the redirect is not followed)."""
    from simcharge.payments.sandbox import page_token

    sid = sandbox_id(order)
    return await client.post(f"/sandbox/pay/{sid}",
                             data={"action": action, "token": page_token(settings, sid)})


async def fulfilled(client: httpx.AsyncClient, settings: Settings, payer: Payer) -> dict[str, Any]:
    """An order placed, paid at the sandbox and credited (checked with the provider): the
    order as the API answers it."""
    order = await place(client, payer)
    await pay_at_sandbox(client, settings, order)
    r = await client.post(f"/api/v1/orders/{order['id']}/check", headers=payer.auth)
    assert r.json()["state"] == "fulfilled"
    return dict(r.json())


async def open_ticket(
    client: httpx.AsyncClient, payer: Payer, *, subject: str, body: str, **about: str
) -> dict[str, Any]:
    """A question the payer asks customer service (`about`: `order_id` or `line_id`)."""
    r = await client.post(
        "/api/v1/me/tickets",
        headers={**payer.auth, **idem()},
        json={"subject": subject, "body": body, **about},
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


def worker_for(app: Any, db: Database, settings: Settings, *, concurrency: int = 4) -> Worker:
    """A worker whose HTTP client reaches the app itself (the sandbox's webhooks)."""
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
    return Worker(db, settings, concurrency=concurrency, http=http)


async def run_worker(app: Any, db: Database, settings: Settings) -> int:
    worker = worker_for(app, db, settings)
    try:
        return await worker.drain()
    finally:
        await worker.http.aclose()
        await worker.close()


def signed_event(settings: Settings, kind: str, obj: dict[str, Any], *, event_id: str | None = None,
                 at: int | None = None, secret: str | None = None) -> tuple[bytes, dict[str, str]]:
    """A sandbox webhook, signed as the sandbox signs them."""
    event = {"id": event_id or f"evt_{uuid.uuid4().hex[:24]}", "type": kind,
             "created": int(time.time()), "data": {"object": obj}}
    body = json.dumps(event).encode()
    key = secret if secret is not None else settings.sandbox_secret.get_secret_value()
    return body, {"content-type": "application/json", "sandbox-signature": sign(key, body, at)}


async def sandbox_object(db: Database, reference: str, **override: Any) -> dict[str, Any]:
    async with db.read() as s:
        row = (await s.execute(select(SandboxPayment).where(
            SandboxPayment.reference == reference))).scalar_one()
    obj = {"id": row.id, "reference": row.reference, "amount": row.amount,
           "currency": row.currency, "state": "paid", "refunded": row.refunded,
           "merchant": MERCHANT, "paid_at": utcnow().isoformat()}
    obj.update(override)
    return obj


async def order_row(db: Database, order_id: str | uuid.UUID) -> Order:
    async with db.read() as s:
        order = await s.get(Order, uuid.UUID(str(order_id)))
        assert order is not None
        return order


async def transfers_of(db: Database, reference: str) -> Sequence[LedgerTransfer]:
    async with db.read() as s:
        return (await s.execute(select(LedgerTransfer).where(
            LedgerTransfer.reference == reference))).scalars().all()


async def assert_ledger_balanced(db: Database) -> None:
    """Per unit, every account's debits equal every account's credits (posted and pending)."""
    async with db.read() as s:
        rows = (await s.execute(select(
            LedgerAccount.unit, func.sum(LedgerAccount.debits_posted),
            func.sum(LedgerAccount.credits_posted), func.sum(LedgerAccount.debits_pending),
            func.sum(LedgerAccount.credits_pending),
        ).group_by(LedgerAccount.unit))).all()
    assert rows
    for unit, dp, cp, dpend, cpend in rows:
        assert int(dp) == int(cp), f"{unit}: posted debits {dp} != credits {cp}"
        assert int(dpend) == int(cpend), f"{unit}: pending debits {dpend} != credits {cpend}"


async def change_plan(db: Database, code: str, **fields: Any) -> None:
    """Load the demo catalog with one plan changed (`prices={"USD": "45.00"}`,
    `validity_days=31`…), as an operator does between a customer's review and "Pay now"."""
    import tomllib

    from simcharge.catalog.service import DEMO_CATALOG, load_catalog, validate_catalog

    data = tomllib.loads(DEMO_CATALOG.read_text(encoding="utf-8"))
    [plan] = [p for p in data["plans"] if p["code"] == code]
    for name, value in fields.items():
        plan[name] = {**plan[name], **value} if isinstance(value, dict) else value
    catalog = validate_catalog(data, source="test")
    await db.run(lambda s: load_catalog(s, catalog))

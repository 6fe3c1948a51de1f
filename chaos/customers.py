"""Simulated customers: each tops up its line (or gives to another's) through the sandbox, pays,
declines, cancels or walks away, re-checks, and finance refunds some of what was paid — all
over HTTP against whichever web process answers, retrying as a real client would (the same
Idempotency-Key) while processes die under it."""

from __future__ import annotations

import asyncio
import random
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

PLANS = ("starter-10", "traveller-20", "explorer-50")
_TOKEN = re.compile(r'name="token" value="([^"]+)"')
RETRYABLE = {502, 503, 504}


class GaveUp(Exception):
    """A request kept failing for longer than a client would keep trying."""


@dataclass
class Customer:
    account_id: uuid.UUID
    token: str
    line_id: uuid.UUID
    msisdn: str
    orders: list[str] = field(default_factory=list)


@dataclass
class Crowd:
    urls: list[str]
    customers: list[Customer]
    staff_key: str
    rng: random.Random
    stats: Counter[str] = field(default_factory=Counter)
    owner: dict[str, Customer] = field(default_factory=dict)
    """Order id → the customer who placed it."""

    async def request(
        self, http: httpx.AsyncClient, method: str, path: str, *, give_up_after: float = 30,
        **kw: Any,
    ) -> httpx.Response:
        """Send to a random web process; on a connection failure or a gateway error, send the
        same request again (same headers: the same Idempotency-Key) to another one."""
        deadline = time.monotonic() + give_up_after
        while True:
            url = self.rng.choice(self.urls) + path
            try:
                r = await http.request(method, url, **kw)
                if r.status_code not in RETRYABLE:
                    if r.status_code >= 500:
                        self.stats["server_errors"] += 1
                    return r
            except httpx.TransportError:
                pass
            self.stats["retries"] += 1
            if time.monotonic() > deadline:
                raise GaveUp(f"{method} {path}")
            await asyncio.sleep(0.2)

    async def live(self, customer: Customer, until: float) -> None:
        async with httpx.AsyncClient(timeout=10, follow_redirects=False) as http:
            while time.monotonic() < until:
                try:
                    if customer.orders and self.rng.random() < 0.12:
                        await self.refund(http, self.rng.choice(customer.orders))
                    else:
                        await self.top_up(http, customer)
                except GaveUp:
                    self.stats["gave_up"] += 1
                await asyncio.sleep(self.rng.uniform(0.05, 0.4))

    async def top_up(self, http: httpx.AsyncClient, customer: Customer) -> None:
        auth = {"Authorization": f"Bearer {customer.token}"}
        body: dict[str, Any] = {"plan": self.rng.choice(PLANS), "method": "sandbox"}
        if self.rng.random() < 0.15:
            other = self.rng.choice(self.customers)
            body["msisdn"] = other.msisdn
            self.stats["gifts"] += 1
        else:
            body["line_id"] = str(customer.line_id)
        headers = {**auth, "Idempotency-Key": f"chaos-{uuid.uuid4().hex}"}
        r = await self.request(http, "POST", "/api/v1/orders", json=body, headers=headers)
        if r.status_code != 201:
            self.stats[f"order refused {r.status_code}"] += 1
            return
        order = r.json()
        self.stats["orders"] += 1
        order_id = order["id"]
        customer.orders.append(order_id)
        self.owner[order_id] = customer
        choice = self.rng.random()
        if choice < 0.05:
            self.stats["abandoned"] += 1
            return
        if choice < 0.10:
            r = await self.request(http, "POST", f"/api/v1/orders/{order_id}/cancel", headers=auth)
            self.stats[f"cancel {r.status_code}"] += 1
            return
        action = "fail" if choice < 0.18 else "pay"
        await self.act_at_sandbox(http, order["next_action"]["url"], action)
        if self.rng.random() < 0.3:
            r = await self.request(http, "POST", f"/api/v1/orders/{order_id}/check", headers=auth)
            self.stats["checks"] += 1

    async def act_at_sandbox(self, http: httpx.AsyncClient, url: str, action: str) -> None:
        path = httpx.URL(url).path
        page = await self.request(http, "GET", path)
        match = _TOKEN.search(page.text)
        if page.status_code != 200 or match is None:
            self.stats["sandbox page unusable"] += 1
            return
        r = await self.request(
            http, "POST", path, data={"action": action, "token": match.group(1)}
        )
        self.stats[f"sandbox {action}"] += 1 if r.status_code == 303 else 0

    async def refund(self, http: httpx.AsyncClient, order_id: str) -> None:
        """Finance refunds part or all of an order, through the staff API (the same key: a
        retry cannot refund twice)."""
        key = {"Authorization": f"Bearer {self.staff_key}"}
        r = await self.request(http, "GET", f"/api/v1/admin/orders/{order_id}", headers=key)
        if r.status_code != 200 or r.json()["state"] not in ("fulfilled", "partially_refunded"):
            return
        body: dict[str, Any] = {"reason": "chaos"}
        if self.rng.random() < 0.5:
            body["amount"] = 100
        headers = {**key, "Idempotency-Key": f"chaos-refund-{uuid.uuid4().hex}"}
        r = await self.request(
            http, "POST", f"/api/v1/admin/orders/{order_id}/refunds", json=body, headers=headers
        )
        self.stats[f"refund {r.status_code}"] += 1

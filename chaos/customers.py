"""Simulated customers: each tops up its line (or gives to another's) through the sandbox, pays,
declines, cancels or walks away, re-checks, and finance refunds some of what was paid — all
over HTTP against whichever web process answers, retrying as a real client would (the same
Idempotency-Key) while processes die under it. Some payments lose every webhook (sent where
nothing listens for them); customers now and then ask for another customer's order, which must
be "not found", and sign in again (each from its own address, as behind a load balancer: the
sign-in limit counts per address and fails closed while Redis is down). Each customer draws
from its own `random.Random`, so what it does does not depend on how asyncio interleaves the
customers."""

from __future__ import annotations

import asyncio
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

PLANS = ("starter-10", "traveller-20", "explorer-50")
_TOKEN = re.compile(r'name="token" value="([^"]+)"')
RETRYABLE = {502, 503, 504}


_ID = re.compile(r"/[0-9a-fA-F-]{16,}|/[A-Za-z0-9_-]{20,}")


LOGIN = "/api/v1/auth/login"
PASSWORD = "chaos-password-2026"  # noqa: S105 - every chaos customer's, made up for the run


class GaveUp(Exception):
    """A request kept failing for longer than a client would keep trying."""


@dataclass(frozen=True)
class ServerError:
    """A 5xx answer a customer got (retried or not)."""

    at: float
    """`time.monotonic()` when it came."""
    status: int
    type: str
    """The problem's `type` (`/problems/service-unavailable`…), or what the body was."""
    route: str
    """Method and path, ids replaced by `{id}`."""


@dataclass(frozen=True)
class SignIn:
    """One sign-in a customer tried, as it answered (after retries of connection failures)."""

    sent: float
    """`time.monotonic()` when it was first sent."""
    answered: float
    status: int
    type: str
    """The problem's `type` when refused, else ""."""
    retry_after: str | None
    session_works: bool | None = None
    """Signed in: whether the new session was then served, and signed out, in whichever
    process answered (sessions are rows in the database, not in Redis). None: not signed in."""


def _problem_type(r: httpx.Response) -> str:
    try:
        found = r.json().get("type")
    except (ValueError, AttributeError):
        found = None
    return str(found) if found else f"(no problem type: {r.headers.get('content-type', '?')})"


@dataclass
class Customer:
    account_id: uuid.UUID
    token: str
    line_id: uuid.UUID
    msisdn: str
    rng: random.Random = field(default_factory=random.Random)
    """This customer's own draws (seeded from the run's seed and its number)."""
    orders: list[str] = field(default_factory=list)
    username: str = ""
    """Signs in with this and `PASSWORD` ("": never signs in)."""
    address: str = "127.0.0.1"
    """The client address the load balancer reports for it (`X-Forwarded-For`)."""


NCHF = "/nchf-convergedcharging/v3/chargingdata"
DATA_GROUP = 200
MIB = 1024 * 1024


def _nchf(msisdn: str, seq: int, units: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "nfConsumerIdentification": {"nodeFunctionality": "SMF", "nFName": str(uuid.uuid4())},
        "invocationTimeStamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "invocationSequenceNumber": seq,
        "subscriberIdentifier": "msisdn-" + msisdn.lstrip("+"),
        "multipleUnitUsage": units,
    }


@dataclass
class Crowd:
    urls: list[str]
    customers: list[Customer]
    staff_key: str
    rng: random.Random
    network_key: str = ""
    """An API key with the scopes `charging` and `usage:write` (the operator's network)."""
    stats: Counter[str] = field(default_factory=Counter)
    owner: dict[str, Customer] = field(default_factory=dict)
    """Order id → the customer who placed it."""
    server_errors: list[ServerError] = field(default_factory=list)
    lose_webhooks: Callable[[str], Awaitable[bool]] | None = None
    """Sends every webhook of a sandbox payment (by its id) where nothing listens; False when
    that could not be done."""
    lose_fraction: float = 0.0
    """The share of paid orders whose webhooks are all lost."""
    lost: set[str] = field(default_factory=set)
    """Orders whose webhooks were all lost."""
    leaks: Counter[str] = field(default_factory=Counter)
    """Answers other than 404 to a customer asking for another customer's order."""
    sign_ins: list[SignIn] = field(default_factory=list)
    storm_lose_fraction: float = 0.0
    """The share of paid orders whose webhooks are all lost while `storming()` is true."""
    storming: Callable[[], bool] = lambda: False
    """Whether the provider is failing now (a provider failure storm)."""

    async def request(
        self, http: httpx.AsyncClient, method: str, path: str, *, give_up_after: float = 30,
        retry_on: frozenset[int] | set[int] = RETRYABLE, **kw: Any,
    ) -> httpx.Response:
        """Send to a random web process; on a connection failure or a gateway error (a status
        in `retry_on`), send the same request again (same headers: the same Idempotency-Key)
        to another one."""
        deadline = time.monotonic() + give_up_after
        while True:
            # Which process answers is the load balancer's draw (the crowd's), not the
            # customer's: retries, which depend on timing, leave the customer's draws alone.
            url = self.rng.choice(self.urls) + path
            try:
                r = await http.request(method, url, **kw)
                if r.status_code >= 500:
                    self.server_errors.append(ServerError(
                        time.monotonic(), r.status_code, _problem_type(r),
                        f"{method} {_ID.sub('/{id}', path)}",
                    ))
                    self.stats["server errors"] += 1
                if r.status_code not in retry_on:
                    return r
            except httpx.TransportError:
                pass
            self.stats["retries"] += 1
            if time.monotonic() > deadline:
                raise GaveUp(f"{method} {path}")
            await asyncio.sleep(0.2)

    async def live(self, customer: Customer, until: float) -> None:
        """Act until `until`. Each action draws all its numbers from the customer's own
        `random.Random` before its first request, so that what the customer does depends on
        the seed and on what the server answered, not on how asyncio interleaved the customers
        or how often a request was retried."""
        rng = customer.rng
        async with httpx.AsyncClient(timeout=10, follow_redirects=False) as http:
            while time.monotonic() < until:
                try:
                    dice = rng.random()
                    if customer.orders and dice < 0.10:
                        await self.refund(http, rng.choice(customer.orders), rng)
                    elif self.network_key and dice < 0.30:
                        await self.data_session(http, customer)
                    elif self.network_key and dice < 0.38:
                        await self.usage_batch(http, customer)
                    elif dice < 0.44:
                        await self.probe(http, customer)
                    elif dice < 0.50:
                        await self.sign_in(http, customer)
                    else:
                        await self.top_up(http, customer)
                except GaveUp:
                    self.stats["gave_up"] += 1
                await asyncio.sleep(rng.uniform(0.05, 0.4))

    async def probe(self, http: httpx.AsyncClient, customer: Customer) -> None:
        """Ask for another customer's order — its page, its receipt, a check at the provider:
        each must be "not found" (404), as if it did not exist."""
        rng = customer.rng
        # Three draws whatever the others did (their orders depend on timing).
        who, which, how = rng.random(), rng.random(), rng.random()
        others = [c for c in self.customers if c is not customer and c.orders]
        if not others:
            return
        orders = others[int(who * len(others))].orders
        order_id = orders[int(which * len(orders))]
        method, path = (
            ("GET", f"/api/v1/orders/{order_id}"),
            ("GET", f"/api/v1/orders/{order_id}/receipt"),
            ("POST", f"/api/v1/orders/{order_id}/check"),
        )[int(how * 3)]
        r = await self.request(
            http, method, path,
            headers={"Authorization": f"Bearer {customer.token}", "Accept": "application/json"},
        )
        self.stats["probes of another's order"] += 1
        if r.status_code != 404:
            self.leaks[f"{r.status_code} on {method} {_ID.sub('/{id}', path)}"] += 1

    async def sign_in(self, http: httpx.AsyncClient, customer: Customer) -> None:
        """Sign in with the password, from the customer's own address; a refusal is not sent
        again (it is what is checked: while Redis is down it must be a 503 with Retry-After);
        signed in, list the orders with the new session and sign out."""
        if not customer.username:
            return
        sent = time.monotonic()
        r = await self.request(
            http, "POST", LOGIN, json={"login": customer.username, "password": PASSWORD},
            headers={"X-Forwarded-For": customer.address, "Accept": "application/json"},
            retry_on=frozenset(),
        )
        answered = time.monotonic()
        self.stats[f"sign-in {r.status_code}"] += 1
        works: bool | None = None
        if r.status_code == 200:
            auth = {"Authorization": f"Bearer {r.json()['token']}",
                    "X-Forwarded-For": customer.address}
            listed = await self.request(http, "GET", "/api/v1/orders", headers=auth)
            out = await self.request(http, "POST", "/api/v1/auth/logout", headers=auth)
            works = listed.status_code == 200 and out.status_code == 200
        self.sign_ins.append(SignIn(
            sent, answered, r.status_code, "" if r.status_code == 200 else _problem_type(r),
            r.headers.get("retry-after"), works,
        ))

    async def top_up(self, http: httpx.AsyncClient, customer: Customer) -> None:
        rng = customer.rng
        auth = {"Authorization": f"Bearer {customer.token}"}
        body: dict[str, Any] = {"plan": rng.choice(PLANS), "method": "sandbox"}
        if rng.random() < 0.15:
            other = rng.choice(self.customers)
            body["msisdn"] = other.msisdn
            self.stats["gifts"] += 1
        else:
            body["line_id"] = str(customer.line_id)
        choice, lose, after = rng.random(), rng.random(), rng.random()
        headers = {**auth, "Idempotency-Key": f"chaos-{uuid.uuid4().hex}"}
        r = await self.request(
            http, "POST", "/api/v1/orders", json=body, headers=headers
        )
        if r.status_code != 201:
            self.stats[f"order refused {r.status_code}"] += 1
            return
        order = r.json()
        self.stats["orders"] += 1
        order_id = order["id"]
        customer.orders.append(order_id)
        self.owner[order_id] = customer
        if choice < 0.05:
            self.stats["abandoned"] += 1
            return
        if choice < 0.10:
            r = await self.request(
                http, "POST", f"/api/v1/orders/{order_id}/cancel", headers=auth
            )
            self.stats[f"cancel {r.status_code}"] += 1
            return
        action = "fail" if choice < 0.18 else "pay"
        url = order["next_action"]["url"]
        # Before paying: every webhook of this payment goes where nothing listens.
        share = self.storm_lose_fraction if self.storming() else self.lose_fraction
        if (
            action == "pay" and lose < share and self.lose_webhooks is not None
            and await self.lose_webhooks(httpx.URL(url).path.rsplit("/", 1)[-1])
        ):
            self.lost.add(order_id)
            self.stats["orders whose webhooks are lost"] += 1
        await self.act_at_sandbox(http, url, action)
        if after < 0.3:
            r = await self.request(
                http, "POST", f"/api/v1/orders/{order_id}/check", headers=auth
            )
            self.stats["checks"] += 1
        elif after < 0.45:
            # Back from the provider's page (the return URL asks the provider).
            r = await self.request(
                http, "GET", f"/api/v1/orders/{order_id}/return", headers=auth
            )
            self.stats[f"returns {r.status_code}"] += 1

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

    async def refund(self, http: httpx.AsyncClient, order_id: str, rng: random.Random) -> None:
        """Finance refunds part or all of an order, through the staff API (the same key: a
        retry cannot refund twice)."""
        key = {"Authorization": f"Bearer {self.staff_key}"}
        part = rng.random() < 0.5
        r = await self.request(http, "GET", f"/api/v1/admin/orders/{order_id}", headers=key)
        if r.status_code != 200 or r.json()["state"] not in ("fulfilled", "partially_refunded"):
            return
        body: dict[str, Any] = {"reason": "chaos"}
        if part:
            body["amount"] = 100
        headers = {**key, "Idempotency-Key": f"chaos-refund-{uuid.uuid4().hex}"}
        r = await self.request(
            http, "POST", f"/api/v1/admin/orders/{order_id}/refunds", json=body, headers=headers
        )
        self.stats[f"refund {r.status_code}"] += 1

    async def data_session(self, http: httpx.AsyncClient, customer: Customer) -> None:
        """The network charges a data session in real time: a quota, one or two updates
        reporting use and asking for more, a release; sometimes the session is dropped (the
        worker times it out). A retry repeats the same body: a retransmission."""
        rng = customer.rng
        abandon, updates = rng.random() < 0.1, rng.randint(0, 2)
        volumes = [rng.randint(0, MIB) for _ in range(updates + 1)]
        auth = {"Authorization": f"Bearer {self.network_key}"}
        ask = {"ratingGroup": DATA_GROUP, "requestedUnit": {"totalVolume": MIB}}
        r = await self.request(
            http, "POST", NCHF, json=_nchf(customer.msisdn, 1, [ask]), headers=auth,
        )
        self.stats[f"nchf create {r.status_code}"] += 1
        if r.status_code != 201:
            return
        ref = httpx.URL(r.headers["location"]).path.rsplit("/", 1)[-1]
        if abandon:
            self.stats["nchf abandoned"] += 1
            return
        seq = 1
        for volume in volumes[:-1]:
            seq += 1
            used = {"localSequenceNumber": 1, "totalVolume": volume}
            units = [{**ask, "usedUnitContainer": [used]}]
            r = await self.request(
                http, "POST", f"{NCHF}/{ref}/update",
                json=_nchf(customer.msisdn, seq, units), headers=auth,
            )
            self.stats[f"nchf update {r.status_code}"] += 1
            if r.status_code != 200:
                return
        used = {"localSequenceNumber": 1, "totalVolume": volumes[-1]}
        units = [{"ratingGroup": DATA_GROUP, "usedUnitContainer": [used]}]
        r = await self.request(
            http, "POST", f"{NCHF}/{ref}/release",
            json=_nchf(customer.msisdn, seq + 1, units), headers=auth,
        )
        self.stats[f"nchf release {r.status_code}"] += 1

    async def usage_batch(self, http: httpx.AsyncClient, customer: Customer) -> None:
        """A batch of offline usage records (voice, data, SMS) for this line."""
        rng = customer.rng
        services = {"voice": (1, 600), "data": (1, 5 * MIB), "sms": (1, 3)}
        records = []
        for _ in range(rng.randint(1, 20)):
            service = rng.choice(list(services))
            records.append({
                "id": f"chaos-{uuid.uuid4().hex}",
                "subscriber": customer.msisdn,
                "service": service,
                "quantity": rng.randint(*services[service]),
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            })
        r = await self.request(
            http, "POST", "/api/v1/usage", json={"records": records},
            headers={"Authorization": f"Bearer {self.network_key}"},
        )
        self.stats[f"usage batch {r.status_code}"] += 1

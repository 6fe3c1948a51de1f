"""Signing customers up and in through the API, reading their codes from mail and SMS."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client import REGISTRY

from tests.conftest import SmtpInbox, last_sms_code

PASSWORD = "violet-harbour-7421"
_n = itertools.count(1)

Deliver = Callable[[], Awaitable[int]]


@dataclass
class Customer:
    username: str
    password: str
    email: str | None
    phone: str | None
    token: str | None = None

    @property
    def auth(self) -> dict[str, str]:
        assert self.token
        return {"Authorization": f"Bearer {self.token}"}


def new_identity(with_phone: bool = True) -> tuple[str, str, str | None]:
    n = next(_n)
    return f"cust{n}", f"cust{n}@example.com", f"+1415555{7500 + n:04d}" if with_phone else None


async def register(
    client: httpx.AsyncClient,
    *,
    username: str,
    email: str | None,
    phone: str | None,
    password: str = PASSWORD,
    language: str = "en",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    body: dict[str, Any] = {"username": username, "password": password, "language": language}
    if email:
        body["email"] = email
    if phone:
        body["phone"] = phone
    return await client.post("/api/v1/auth/register", json=body, headers=headers or {})


async def verify(
    client: httpx.AsyncClient, customer: Customer, channel: str, code: str
) -> httpx.Response:
    return await client.post(
        "/api/v1/auth/verify",
        json={
            "channel": channel,
            "code": code,
            "login": customer.username,
            "password": customer.password,
        },
    )


async def login(
    client: httpx.AsyncClient,
    login: str,
    password: str = PASSWORD,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> httpx.Response:
    return await client.post(
        "/api/v1/auth/login",
        json={"login": login, "password": password, **extra},
        headers=headers or {},
    )


async def signup(
    client: httpx.AsyncClient,
    inbox: SmtpInbox,
    deliver: Deliver,
    *,
    with_phone: bool = True,
    language: str = "en",
    user_agent: str = "pytest-browser/1.0",
) -> Customer:
    """A registered customer with verified contacts, signed in with a bearer token."""
    username, email, phone = new_identity(with_phone)
    headers = {"User-Agent": user_agent}
    r = await register(
        client, username=username, email=email, phone=phone, language=language, headers=headers
    )
    assert r.status_code == 202, r.text
    await deliver()
    customer = Customer(username, PASSWORD, email, phone)
    assert (await verify(client, customer, "email", inbox.last_code(email))).status_code == 200
    if phone:
        assert (await verify(client, customer, "sms", last_sms_code(phone))).status_code == 200
    r = await login(client, username, headers=headers)
    assert r.status_code == 200, r.text
    customer.token = r.json()["token"]
    await deliver()
    return customer


def problem(r: httpx.Response) -> dict[str, Any]:
    assert r.headers["content-type"] == "application/problem+json", r.text
    body: dict[str, Any] = r.json()
    return body


def comparable(r: httpx.Response) -> tuple[int, dict[str, Any]]:
    """Status and body without what differs per request (request id, instance)."""
    body = dict(r.json())
    body.pop("request_id", None)
    return r.status_code, body


def argon2_work() -> dict[str, float]:
    """How many argon2id hashes and checks this process has computed so far (the metric
    `simcharge_password_hashes_total` the server exports)."""
    return {
        op: REGISTRY.get_sample_value("simcharge_password_hashes_total", {"operation": op}) or 0.0
        for op in ("hash", "verify")
    }


async def argon2_work_of(call: Awaitable[httpx.Response]) -> tuple[httpx.Response, dict[str, float]]:
    """The answer to a request, and the argon2id work it cost."""
    before = argon2_work()
    response = await call
    after = argon2_work()
    return response, {op: after[op] - before[op] for op in after}

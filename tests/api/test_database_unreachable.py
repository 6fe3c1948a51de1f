"""A database that cannot be reached (restarting, failing over) gets a 503 that says to retry,
not a 500 that says something is broken."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from sqlalchemy.exc import DBAPIError

from simcharge.app import create_app
from simcharge.config import Settings
from simcharge.db import Database, is_unreachable, retry_reason


@pytest.fixture
async def nowhere() -> AsyncIterator[Database]:
    """A PostgreSQL URL on a local port where nothing listens (as while the server restarts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = Database.from_url(f"postgresql+asyncpg://simcharge@127.0.0.1:{port}/simcharge")
    yield db
    await db.dispose()


async def test_a_request_while_the_database_is_unreachable_gets_503_with_retry_after(
    settings: Settings, nowhere: Database
) -> None:
    app = create_app(settings, db=nowhere, run_worker=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        r = await client.get("/api/v1/plans", headers={"X-Request-Id": "req-db-down-1"})
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.headers["retry-after"] == "2"
    assert r.headers["x-request-id"] == "req-db-down-1"
    body = r.json()
    assert body["type"].endswith("/service-unavailable") and body["status"] == 503
    assert "Traceback" not in r.text and "127.0.0.1" not in r.text


def test_what_counts_as_unreachable() -> None:
    refused = ConnectionRefusedError(111, "Connect call failed")
    assert is_unreachable(refused)
    wrapped = DBAPIError("SELECT 1", {}, refused, connection_invalidated=True)
    assert is_unreachable(wrapped)

    class CannotConnectNowError(Exception):  # asyncpg's name: "the database system is starting up"
        pass

    starting = DBAPIError("SELECT 1", {}, CannotConnectNowError("starting up"))
    assert is_unreachable(starting)
    assert not is_unreachable(DBAPIError("SELECT 1", {}, ValueError("syntax error")))
    assert not is_unreachable(RuntimeError("a bug"))


def test_a_connection_closed_under_the_driver_is_unreachable_and_worth_a_retry() -> None:
    """asyncpg raises its own "connection is closed", unwrapped, when the server goes away while
    SQLAlchemy sets up a new connection (seen in the chaos check during a restart): 503 and a
    retry, not 500. Its other interface errors are bugs."""
    closed = asyncpg.InterfaceError("connection is closed")
    assert is_unreachable(closed) and retry_reason(closed) == "disconnect"
    busy = asyncpg.InterfaceError("cannot perform operation: another operation is in progress")
    assert not is_unreachable(busy) and retry_reason(busy) is None


async def test_an_nchf_request_while_the_database_is_unreachable_gets_503_with_its_cause(
    settings: Settings, nowhere: Database
) -> None:
    """On an Nchf path the 503 keeps its type — `service-unavailable`: nothing was done, send it
    again (the chaos check holds the CHF to it while PostgreSQL restarts) — and carries the
    `cause` a network function reads (TS 29.500: `NF_CONGESTION`). The first version of Nchf's
    error shape gave it the type `nchf-error`, which no client could tell from a refusal."""
    app = create_app(settings, db=nowhere, run_worker=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        r = await client.post(
            "/nchf-convergedcharging/v3/chargingdata",
            json={"subscriberIdentifier": "imsi-001010000000001"},
            headers={"Authorization": "Bearer sck_unknown_key_for_the_test"},
        )
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "2"
    body = r.json()
    assert body["type"].endswith("/service-unavailable") and body["status"] == 503
    assert body["cause"] == "NF_CONGESTION"

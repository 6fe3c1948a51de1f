"""The chaos run's Redis outage and provider failure storms (eighth review round: `make chaos`
had neither) — the faults themselves, and the checks that judge a run by them. Each check is fed
a state that breaks what it guards and must report it; and a clean state must pass.

- `test_server_errors_are_forgiven_only_in_their_own_fault_window`: the server-error check
  knew only PostgreSQL's restart; a 503 to a sign-in while Redis is down, or a
  `payment-provider-unavailable` during a storm, would have been a false alarm — and each must
  stay a violation outside its window, on another route, or as another type.
- `test_a_sign_in_let_through_while_redis_is_down_is_reported` and the tests after it: nothing
  checked that the rate limits fail closed (README "Redis"), that the refusal carries
  `Retry-After`, that sign-ins recover, or that a session a sign-in opened works.
- `test_readiness_must_follow_redis`: nothing checked that `/readyz` says "not ready" while
  Redis is down and "ready" once it is back.
- `test_a_storm_that_injected_nothing_is_reported`: a storm during which no provider call was
  made would have passed as proof.
- `test_the_storm_file`: a run that dies mid-storm must not leave the provider failing for
  ever; a malformed file is no storm.
- `test_sign_ins_through_a_real_redis_outage`: the harness's own Redis (a real `redis-server`
  on a free port, never the shared 6379) killed and started again under the real app, signed in
  by the chaos customer's own code: refused with a 503 and `Retry-After` while down, signed in
  after; `/readyz` 503 then 200; and the check finds nothing wrong in what it recorded.
- `test_a_paid_order_and_a_refund_come_through_a_provider_storm`: the failing sandbox of the
  chaos processes, end to end (PostgreSQL: the checker reads a chaos run's database): a "check
  now" during the storm is a 503 and credits nothing; a refund whose answer is lost after the
  sandbox took it is asked again after the storm and taken once; then the checker finds every
  promise kept and the faults log names what was injected.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from chaos.checks import (
    Readiness,
    Verdict,
    bring_retries_forward,
    readiness_verdict,
    server_error_verdict,
    sign_in_verdict,
    storm_verdict,
    verify,
)
from chaos.cluster import SHARED_REDIS_PORT, RedisServer
from chaos.customers import LOGIN, PASSWORD, Crowd, Customer, ServerError, SignIn
from chaos.faults import (
    FAULT_LOG_ENV,
    STORM_FILE_ENV,
    FaultySandbox,
    count_faults,
    end_storm,
    start_storm,
    storm_now,
)
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.app import create_app
from simcharge.auth.apikeys import create_api_key
from simcharge.config import Settings
from simcharge.db import Database
from simcharge.payments import registry
from tests.factories import create_account, load_demo_catalog
from tests.orders.helpers import idem, new_payer, order_row, pay_at_sandbox, place, run_worker

UNAVAILABLE = "/problems/service-unavailable"
PROVIDER = "/problems/payment-provider-unavailable"
SIGN_IN = f"POST {LOGIN}"


def test_server_errors_are_forgiven_only_in_their_own_fault_window() -> None:
    redis = (100.0, 106.0)
    storm = (200.0, 212.0)
    errors = [
        ServerError(103.0, 503, UNAVAILABLE, SIGN_IN),  # Redis down: the limit fails closed
        ServerError(112.0, 503, UNAVAILABLE, SIGN_IN),  # reconnecting
        ServerError(103.0, 503, UNAVAILABLE, "POST /api/v1/orders"),  # Redis is not asked there
        ServerError(150.0, 503, UNAVAILABLE, SIGN_IN),  # long after the outage
        ServerError(205.0, 503, PROVIDER, "POST /api/v1/orders/{id}/check"),  # the storm
        ServerError(220.0, 503, PROVIDER, "POST /api/v1/orders"),  # a slow answer, after it
        ServerError(260.0, 503, PROVIDER, "POST /api/v1/orders"),  # nothing failing then
        ServerError(205.0, 500, "/problems/internal-error", "POST /api/v1/orders/{id}/check"),
    ]
    v = Verdict()
    server_error_verdict(v, errors, [], redis_outages=[redis], storms=[storm])
    assert v.facts["503 to sign-ins while Redis was down"] == 2
    assert v.facts["503 while the provider failed (retried)"] == {
        "POST /api/v1/orders": 1, "POST /api/v1/orders/{id}/check": 1,
    }
    assert v.violations == [
        "server error: 500 /problems/internal-error on POST /api/v1/orders/{id}/check (1×)",
        "server error: 503 /problems/payment-provider-unavailable on POST /api/v1/orders (1×)",
        "server error: 503 /problems/service-unavailable on POST /api/v1/auth/login (1×)",
        "server error: 503 /problems/service-unavailable on POST /api/v1/orders (1×)",
    ]


OUTAGE = (100.0, 106.0)


def _clean_sign_ins() -> list[SignIn]:
    return [
        SignIn(90.0, 90.2, 200, "", None, True),
        SignIn(101.0, 101.1, 503, UNAVAILABLE, "5"),
        SignIn(99.5, 100.5, 503, UNAVAILABLE, "5"),  # sent before it was gone: not judged
        SignIn(120.0, 120.3, 200, "", None, True),
    ]


def test_clean_sign_ins_are_no_violation() -> None:
    v = Verdict()
    sign_in_verdict(v, _clean_sign_ins(), [OUTAGE])
    assert v.violations == []
    assert v.facts["sign-ins refused while Redis was down"] == 1
    assert v.facts["sign-ins"] == {"200": 2, "503": 2}


def test_a_sign_in_let_through_while_redis_is_down_is_reported() -> None:
    v = Verdict()
    sign_in_verdict(v, [*_clean_sign_ins(), SignIn(102.0, 102.5, 200, "", None, True)], [OUTAGE])
    assert v.violations == [
        "a sign-in was let through while Redis was down (the rate limits must fail closed)"
    ]


def test_a_refusal_of_another_kind_or_without_retry_after_is_reported() -> None:
    v = Verdict()
    odd = [SignIn(102.0, 102.5, 429, "/problems/too-many-attempts", "30"),
           SignIn(103.0, 103.5, 503, UNAVAILABLE, None)]
    sign_in_verdict(v, [*_clean_sign_ins(), *odd], [OUTAGE])
    assert v.violations == [
        "a sign-in while Redis was down was answered 429 /problems/too-many-attempts "
        "(expected 503 service-unavailable)",
        "a sign-in refused while Redis was down had no Retry-After",
    ]


def test_an_outage_nothing_tried_or_nothing_recovered_from_is_reported() -> None:
    before_only = [SignIn(90.0, 90.2, 200, "", None, True)]
    v = Verdict()
    sign_in_verdict(v, before_only, [OUTAGE])
    assert v.violations == [
        "no sign-in was refused while Redis was down: the outage proved nothing",
        "no sign-in succeeded after Redis was started again (outage 1)",
    ]
    # Refused after the restart, beyond the recovery allowed: not recovered either.
    late = [*_clean_sign_ins()[:3], SignIn(120.0, 120.3, 503, UNAVAILABLE, "5")]
    v = Verdict()
    sign_in_verdict(v, late, [OUTAGE])
    assert v.violations == ["no sign-in succeeded after Redis was started again (outage 1)"]


def test_a_session_from_a_sign_in_that_does_not_work_is_reported() -> None:
    v = Verdict()
    sign_in_verdict(v, [*_clean_sign_ins(), SignIn(130.0, 130.2, 200, "", None, False)],
                    [OUTAGE])
    assert v.violations == [
        "a session just opened by a sign-in was not served or not signed out"
    ]


def test_readiness_must_follow_redis() -> None:
    clean = [Readiness("web1", "down", 503, "unreachable"), Readiness("web2", "down", 0, None),
             Readiness("web1", "back", 200, "ok"), Readiness("web2", "back", 0, None),
             Readiness("web3", "back", 503, "ok")]
    v = Verdict()
    # web2 was being restarted: not judged; web3 finds Redis, its database is away meanwhile.
    readiness_verdict(v, clean)
    assert v.violations == []
    wrong = [Readiness("web1", "down", 200, "ok"), Readiness("web2", "down", 503, "ok"),
             Readiness("web1", "back", 503, "unreachable"), Readiness("web2", "back", 200, "ok")]
    v = Verdict()
    readiness_verdict(v, wrong)
    assert v.violations == [
        "web1 /readyz answered 200 (redis: ok) while Redis was down (expected 503, redis "
        "unreachable)",
        "web2 /readyz answered 503 (redis: ok) while Redis was down (expected 503, redis "
        "unreachable)",
        "web1 /readyz still answered 503 (redis: unreachable) after Redis was back",
    ]
    v = Verdict()
    readiness_verdict(v, [Readiness("web1", "down", 0, None), Readiness("web1", "back", 0, None)])
    assert v.violations == ["no web process answered /readyz while Redis was down",
                            "no web process answered /readyz after Redis was back"]


def test_a_storm_that_injected_nothing_is_reported() -> None:
    v = Verdict()
    storm_verdict(v, {}, [(1.0, 2.0)])
    assert v.violations == [
        "the provider storm injected no fault: no provider call was made while it lasted"
    ]
    v = Verdict()
    storm_verdict(v, {"query": {"5xx": 2}}, [(1.0, 2.0)])
    assert v.violations == []
    v = Verdict()
    storm_verdict(v, {}, [])  # no storm: nothing to prove
    assert v.violations == []


def test_the_storm_file(tmp_path: Path) -> None:
    path = tmp_path / "storm.json"
    assert storm_now(path) is None
    start_storm(path, 60)
    assert storm_now(path) == ""  # a fault drawn per call
    assert storm_now(path, now=time.time() + 61) is None  # ends by itself
    start_storm(path, 60, "lost answer")
    assert storm_now(path) == "lost answer"
    path.write_text("{not json")
    assert storm_now(path) is None
    path.write_text(json.dumps(["until"]))
    assert storm_now(path) is None
    end_storm(path)
    end_storm(path)
    assert not path.exists()


async def test_sign_ins_through_a_real_redis_outage(
    tmp_path: Path, settings: Settings, db: Database
) -> None:
    redis = RedisServer(tmp_path)
    await redis.start()
    try:
        assert redis.port != SHARED_REDIS_PORT
        account = await db.run(lambda s: create_account(s, password=PASSWORD))
        app: Any = create_app(settings.model_copy(update={"redis_url": redis.url}), db=db,
                              run_worker=False)
        customer = Customer(account.id, "", account.id, "+14155550000",
                            username=account.username)
        crowd = Crowd(["http://testserver"], [customer], "", random.Random(0))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
            await crowd.sign_in(http, customer)
            await redis.stop()
            gone = time.monotonic()
            await crowd.sign_in(http, customer)
            down = await http.get("http://testserver/readyz")
            starting = time.monotonic()
            await redis.start()
            back = await http.get("http://testserver/readyz")
            await crowd.sign_in(http, customer)
    finally:
        await redis.stop()
    before, during, after = crowd.sign_ins
    assert (before.status, before.session_works) == (200, True)
    assert (during.status, during.type, during.retry_after) == (503, UNAVAILABLE, "5")
    assert (after.status, after.session_works) == (200, True)
    assert (down.status_code, down.json()["redis"]) == (503, "unreachable")
    assert back.status_code == 200
    v = Verdict()
    sign_in_verdict(v, crowd.sign_ins, [(gone, starting)], recovery=0)
    server_error_verdict(v, crowd.server_errors, [], redis_outages=[(gone, starting)])
    assert v.violations == []
    assert v.facts["sign-ins refused while Redis was down"] == 1


@pytest.mark.postgres_only
async def test_a_paid_order_and_a_refund_come_through_a_provider_storm(
    fresh_db: Database, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storm, faults = tmp_path / "storm.json", tmp_path / "faults.log"
    monkeypatch.setenv(STORM_FILE_ENV, str(storm))
    monkeypatch.setenv(FAULT_LOG_ENV, str(faults))
    monkeypatch.setattr(registry, "SandboxProvider", FaultySandbox)
    await fresh_db.run(load_demo_catalog)
    app: Any = create_app(settings, db=fresh_db, run_worker=False)

    async def sql(statement: str) -> None:
        async def run(s: AsyncSession) -> None:
            await s.execute(text(statement))

        await fresh_db.run(run)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as client:
        payer = await new_payer(fresh_db, settings)
        order = await place(client, payer, plan="explorer-50")
        assert (await pay_at_sandbox(client, settings, order)).status_code == 303
        # Every webhook lost: those sent, and those to come (answered 405: tried again later).
        await sql("DELETE FROM outbox_jobs WHERE kind = 'sandbox.deliver_webhook'")
        await sql("UPDATE sandbox_payments SET notify_url = 'http://testserver/healthz'")
        check = f"/api/v1/orders/{order['id']}/check"
        for fault in ("5xx", "lost answer"):
            start_storm(storm, 60, fault)
            r = await client.post(check, headers=payer.auth)
            assert r.status_code == 503, r.text
            assert r.json()["type"] == PROVIDER
            assert (await order_row(fresh_db, order["id"])).state == "pending"
        end_storm(storm)
        r = await client.post(check, headers=payer.auth)
        assert r.status_code == 200
        assert (await order_row(fresh_db, order["id"])).state == "fulfilled"

        key = await fresh_db.run(lambda s: create_api_key(s, "finance", ["refunds:write"]))
        start_storm(storm, 60, "lost answer")
        r = await client.post(
            f"/api/v1/admin/orders/{order['id']}/refunds",
            headers={"Authorization": f"Bearer {key.token}", **idem()},
            json={"reason": "storm", "amount": 100},
        )
        assert r.status_code == 202, r.text
        await run_worker(app, fresh_db, settings)
        async with fresh_db.read() as s:
            taken = (await s.execute(text("SELECT refunded FROM sandbox_payments"))).scalar_one()
            pending = (await s.execute(text("SELECT state FROM refunds"))).scalar_one()
        assert (taken, pending) == (100, "pending")  # taken at the sandbox, the answer lost
        end_storm(storm)
        assert await bring_retries_forward(fresh_db) >= 1
        await run_worker(app, fresh_db, settings)
        await sql("DELETE FROM outbox_jobs WHERE kind = 'sandbox.deliver_webhook'")

    async with fresh_db.read() as s:
        taken = (await s.execute(text("SELECT refunded FROM sandbox_payments"))).scalar_one()
        done = (await s.execute(text("SELECT state FROM refunds"))).scalar_one()
    assert (taken, done) == (100, "succeeded")  # asked again: the same refund, taken once
    assert (await order_row(fresh_db, order["id"])).state == "partially_refunded"
    verdict = await verify(fresh_db, min_paid=1)
    assert verdict.violations == []
    assert count_faults(faults) == {"query": {"5xx": 1, "lost answer": 1},
                                    "refund": {"lost answer": 1}}


async def test_a_storm_lasts_until_a_refund_has_met_it(tmp_path: Path) -> None:
    """The storm runs its `seconds`, then on (up to as long again) until a refund call has
    failed in it; the window the checks forgive is the one it really had."""
    from chaos.__main__ import provider_storm

    storm, faults = tmp_path / "storm.json", tmp_path / "faults.log"
    crowd = Crowd(["http://unused"], [], "", random.Random(0))
    events: list[str] = []
    windows: list[tuple[float, float]] = []
    seen: list[str | None] = []

    async def look() -> None:
        await asyncio.sleep(0)
        seen.append(storm_now(storm))

    # No refund met it: on for twice its length.
    await asyncio.gather(
        provider_storm(storm, faults, crowd, random.Random(0), 0, 0.5, events, windows), look()
    )
    assert seen == [""]  # on from the start, a fault drawn per call
    (began, ended), = windows
    assert ended - began >= 1.0
    assert storm_now(storm) is None and not storm.exists()
    assert events == [f"provider storm {ended - began:.0f} s"]
    # A refund met it: it ends after its `seconds`, and the window says so too.
    faults.write_text("query 5xx\nrefund lost answer\n")
    windows.clear()
    await provider_storm(storm, faults, crowd, random.Random(0), 0, 0.5, events, windows)
    (began, ended), = windows
    assert ended - began >= 0.5
    assert storm_now(storm) is None

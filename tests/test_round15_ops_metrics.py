"""Operations' metrics (the fifteenth round's SRE walkthrough): a `PROMETHEUS_MULTIPROC_DIR`
that does not exist yet is made before any metric is (it stopped `serve` and `worker` with
FileNotFoundError), and a payment provider's outage shows in
`simcharge_provider_calls_total{provider,call,outcome}` — respx answering at Stripe's HTTP
boundary with a connection error, a refusal, and a good answer."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from prometheus_client import REGISTRY
from pydantic import SecretStr

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.metrics import MULTIPROC_ENV, prepare_multiprocess
from simcharge.payments.providers import call_outcome
from simcharge.payments.providers.base import ProviderError
from simcharge.payments.providers.stripe import StripeProvider
from simcharge.payments.service import Outcome, reconcile_order
from tests.factories import load_demo_catalog
from tests.orders.helpers import idem, new_payer, order_row

SIMCHARGE = str(Path(sys.executable).with_name("simcharge"))
SESSIONS = "https://api.stripe.com/v1/checkout/sessions"


# --- PROMETHEUS_MULTIPROC_DIR -------------------------------------------------------------------


def test_a_missing_multiprocess_directory_is_made_for_the_worker_too(tmp_path: Path) -> None:
    missing = tmp_path / "not" / "there"
    env = {
        **os.environ,
        "SIMCHARGE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'w.db'}",
        "SIMCHARGE_ENV": "development",
        MULTIPROC_ENV: str(missing),
    }
    subprocess.run([SIMCHARGE, "db", "upgrade"], env=env, check=True, capture_output=True,
                   timeout=120)
    done = subprocess.run([SIMCHARGE, "worker", "--drain"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "ran " in done.stdout and "Traceback" not in done.stderr
    assert missing.is_dir() and missing.stat().st_mode & 0o077 == 0  # this user's only


def test_serve_empties_an_existing_directory_of_prometheus_files_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_999999.db").write_bytes(b"left by an earlier run")
    (directory / "notes.txt").write_text("not prometheus_client's: left alone")
    monkeypatch.setenv(MULTIPROC_ENV, str(directory))
    assert prepare_multiprocess(2) == directory
    assert not (directory / "counter_999999.db").exists()
    assert (directory / "notes.txt").exists()
    nested = tmp_path / "a" / "b"
    monkeypatch.setenv(MULTIPROC_ENV, str(nested))
    assert prepare_multiprocess(2) == nested and nested.is_dir()


# --- provider calls -----------------------------------------------------------------------------


def calls(call: str, outcome: str, provider: str = "stripe") -> float:
    labels = {"provider": provider, "call": call, "outcome": outcome}
    return REGISTRY.get_sample_value("simcharge_provider_calls_total", labels) or 0.0


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={
        "sandbox_stands_in": False,
        "stripe_secret_key": SecretStr("sk_test_" + secrets.token_hex(12)),
        "stripe_webhook_secret": SecretStr("whsec_" + secrets.token_hex(16)),
    })


@pytest.fixture
async def _catalog(db: Database) -> None:
    await db.run(load_demo_catalog)


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


def _session(request: httpx.Request) -> httpx.Response:
    from urllib.parse import parse_qs

    sent = parse_qs(request.content.decode())
    sid = "cs_test_" + uuid.uuid4().hex
    return httpx.Response(200, json={
        "id": sid, "object": "checkout.session", "status": "open",
        "payment_status": "unpaid", "client_reference_id": sent["client_reference_id"][0],
        "amount_total": int(sent["line_items[0][price_data][unit_amount]"][0]),
        "currency": "usd", "expires_at": int(sent["expires_at"][0]),
        "url": f"https://checkout.stripe.com/c/pay/{sid}"})


@pytest.mark.usefixtures("_catalog")
async def test_a_checkout_while_stripe_is_unreachable_is_a_503_with_retry_after_and_counted(
    client: httpx.AsyncClient, db: Database, settings: Settings, mock: respx.MockRouter
) -> None:
    mock.post(SESSIONS).mock(side_effect=httpx.ConnectError("connection refused"))
    before = calls("create_checkout", "unreachable")
    payer = await new_payer(db, settings)
    body = {"plan": "starter-10", "method": "card", "line_id": str(payer.line.id)}
    r = await client.post("/api/v1/orders", json=body, headers={**payer.auth, **idem()})
    assert r.status_code == 503, r.text
    assert r.json()["type"].endswith("/problems/payment-provider-unavailable")
    assert int(r.headers["retry-after"]) >= 1
    assert calls("create_checkout", "unreachable") == before + 1
    scraped = (await client.get("/metrics")).text
    assert (
        'simcharge_provider_calls_total{call="create_checkout",outcome="unreachable",'
        'provider="stripe"}' in scraped
    )


@pytest.mark.usefixtures("_catalog")
async def test_a_refusal_is_an_error_and_a_good_answer_ok(
    client: httpx.AsyncClient, db: Database, settings: Settings, mock: respx.MockRouter
) -> None:
    route = mock.post(SESSIONS)
    route.respond(400, json={"error": {"type": "invalid_request_error", "code": "parameter_invalid",
                                       "message": "Invalid currency."}})
    errors, oks = calls("create_checkout", "error"), calls("create_checkout", "ok")
    payer = await new_payer(db, settings)
    body = {"plan": "starter-10", "method": "card", "line_id": str(payer.line.id)}
    r = await client.post("/api/v1/orders", json=body, headers={**payer.auth, **idem()})
    assert r.status_code >= 400, r.text
    assert calls("create_checkout", "error") == errors + 1
    route.mock(side_effect=_session)
    r = await client.post("/api/v1/orders", json=body, headers={**payer.auth, **idem()})
    assert r.status_code == 201, r.text
    assert calls("create_checkout", "ok") == oks + 1


@pytest.mark.usefixtures("_catalog")
async def test_reconciliation_against_an_unreachable_provider_is_counted(
    app: Any, client: httpx.AsyncClient, db: Database, settings: Settings,
    mock: respx.MockRouter,
) -> None:
    mock.post(SESSIONS).mock(side_effect=_session)
    payer = await new_payer(db, settings)
    body = {"plan": "starter-10", "method": "card", "line_id": str(payer.line.id)}
    r = await client.post("/api/v1/orders", json=body, headers={**payer.auth, **idem()})
    assert r.status_code == 201, r.text
    order_id = uuid.UUID(r.json()["id"])
    mock.get(url__startswith=SESSIONS + "/").mock(side_effect=httpx.ConnectTimeout("no answer"))
    before = calls("query", "unreachable")
    outcome = await reconcile_order(db, app.state.providers, order_id)
    assert outcome is Outcome.unchanged  # asked again next time
    assert calls("query", "unreachable") == before + 1
    assert (await order_row(db, str(order_id))).state == "pending"


async def test_the_adapters_stay_what_they_are_and_are_counted_once(settings: Settings) -> None:
    from simcharge.payments.providers import configured_providers, count_calls

    async with httpx.AsyncClient() as http:
        stripe = configured_providers(settings, http)["stripe"]
    assert isinstance(stripe, StripeProvider)
    wrapped = stripe.create_checkout
    assert count_calls(stripe).create_checkout is wrapped  # not counted twice


def test_outcomes() -> None:
    assert call_outcome(None) == "ok"
    for code in ("timeout", "network_error"):
        assert call_outcome(ProviderError("stripe", code, "x", transient=True)) == "unreachable"
    assert call_outcome(ProviderError("stripe", "card_declined", "x", transient=False)) == "error"
    assert call_outcome(ProviderError("stripe", "api_error", "x", transient=True)) == "error"
    assert call_outcome(ValueError("bad answer")) == "error"

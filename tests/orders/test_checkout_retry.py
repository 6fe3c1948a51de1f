"""A true retry of `POST /orders` after the provider's answer was lost: Stripe keeps the first
request under its Idempotency-Key and refuses the same key with other parameters (400
`idempotency_error`), so the retry must send the very same request and get the same session."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import parse_qs

import httpx
import pytest
import respx
from pydantic import SecretStr

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import clock
from tests.orders.helpers import idem, new_payer, order_row

STRIPE = "https://api.stripe.com/v1/checkout/sessions"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={
        "sandbox_stands_in": False,
        "stripe_secret_key": SecretStr("sk_test_" + secrets.token_hex(12)),
        "stripe_webhook_secret": SecretStr("whsec_" + secrets.token_hex(16)),
    })


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


async def test_a_retry_after_a_lost_answer_opens_the_same_stripe_session(
    client: httpx.AsyncClient, db: Database, settings: Settings, mock: respx.MockRouter
) -> None:
    seen: dict[str, bytes] = {}

    def stripe(request: httpx.Request) -> httpx.Response:
        key = request.headers["Idempotency-Key"]
        if key not in seen:
            seen[key] = request.content
            raise httpx.ReadTimeout("the answer was lost", request=request)
        if seen[key] != request.content:
            return httpx.Response(400, json={"error": {
                "type": "idempotency_error",
                "message": "Keys for idempotent requests can only be used with the same "
                           "parameters they were first used with."}})
        sent = parse_qs(request.content.decode())
        sid = "cs_test_" + key
        return httpx.Response(200, json={
            "id": sid, "object": "checkout.session", "status": "open",
            "payment_status": "unpaid", "client_reference_id": key,
            "amount_total": int(sent["line_items[0][price_data][unit_amount]"][0]),
            "currency": "usd", "expires_at": int(sent["expires_at"][0]),
            "url": f"https://checkout.stripe.com/c/pay/{sid}"})

    mock.post(STRIPE).mock(side_effect=stripe)
    payer = await new_payer(db, settings)
    body = {"plan": "starter-10", "method": "card", "line_id": str(payer.line.id)}
    key = idem()
    clock.freeze(datetime.now(UTC))
    first = await client.post("/api/v1/orders", json=body, headers={**payer.auth, **key})
    assert first.status_code == 503, first.text  # transient: try again with the same key
    clock.advance(seconds=5)
    again = await client.post("/api/v1/orders", json=body, headers={**payer.auth, **key})
    assert again.status_code == 201, again.text
    assert (await order_row(db, again.json()["id"])).state == "pending"
    assert again.json()["next_action"]["url"].startswith("https://checkout.stripe.com/")

"""`find_refund`, the look before a late refund is sent (review round 15), at the adapters.

End to end (each provider, the worker, both databases): `tests/orders/
test_round15_restore_refund_providers.py`. Here the adapters' own edges: respx answers at the
provider's HTTP boundary, in the shapes it documents.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx
from pydantic import SecretStr

from simcharge.payments.providers import ProviderError, RefundRequest
from simcharge.payments.providers.paypal import PayPalConfig, PayPalProvider
from simcharge.payments.providers.stripe import StripeConfig, StripeProvider

STRIPE = "https://api.stripe.com"
PAYPAL = "https://api-m.sandbox.paypal.com"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def _request(**changes: Any) -> RefundRequest:
    fields: dict[str, Any] = {
        "reference": "ord_123456",
        "payment_id": "pi_3ord123456",
        "refund_id": "RF0000000001",
        "amount": 500,
        "total": 1999,
        "currency": "USD",
        "reason": None,
    }
    return RefundRequest(**{**fields, **changes})


def _refund(rid: str, amount: int, status: str, ours: str | None = None) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "refund",
        "amount": amount,
        "charge": "ch_3ord123456",
        "created": 1764000000,
        "currency": "usd",
        "metadata": {"reference": "ord_123456", "refund_id": ours} if ours else {},
        "payment_intent": "pi_3ord123456",
        "reason": None,
        "status": status,
    }


def _stripe(http: httpx.AsyncClient) -> StripeProvider:
    return StripeProvider(StripeConfig(SecretStr("sk_test_r15"), SecretStr("whsec_r15")), http)


async def test_stripe_counts_refunds_on_their_way_and_not_the_failed_ones(
    http: httpx.AsyncClient,
) -> None:
    """Succeeded and pending refunds count (the money is going back); failed and canceled do
    not. None of them ours: nothing found."""
    listed = [
        _refund("re_1", 300, "succeeded"),
        _refund("re_2", 200, "pending"),
        _refund("re_3", 400, "failed"),
        _refund("re_4", 100, "canceled"),
    ]
    with respx.mock() as router:
        route = router.get(f"{STRIPE}/v1/refunds").respond(
            200, json={"object": "list", "url": "/v1/refunds", "has_more": False, "data": listed}
        )
        found = await _stripe(http).find_refund(_request())
    assert (found.found, found.refunded) == (None, 500)
    sent = route.calls.last.request.url.params
    assert (sent["payment_intent"], sent["limit"]) == ("pi_3ord123456", "100")


async def test_stripe_ours_is_found_by_its_metadata_even_if_failed(
    http: httpx.AsyncClient,
) -> None:
    """Our refund, failed at Stripe: found (and applied as failed), not made again."""
    listed = [_refund("re_9", 500, "failed", ours="RF0000000001")]
    with respx.mock() as router:
        router.get(f"{STRIPE}/v1/refunds").respond(
            200, json={"object": "list", "url": "/v1/refunds", "has_more": False, "data": listed}
        )
        found = await _stripe(http).find_refund(_request())
    assert found.found is not None
    assert (found.found.refund_id, found.found.provider_refund_id) == ("RF0000000001", "re_9")
    assert found.found.state.value == "failed" and found.refunded == 0


async def test_stripe_a_page_saying_more_without_an_id_to_go_on_from_is_asked_again(
    http: httpx.AsyncClient,
) -> None:
    page = {
        "object": "list",
        "url": "/v1/refunds",
        "has_more": True,
        "data": [{"object": "refund"}],
    }
    with respx.mock() as router:
        router.get(f"{STRIPE}/v1/refunds").respond(200, json=page)
        with pytest.raises(ProviderError) as raised:
            await _stripe(http).find_refund(_request())
    assert raised.value.code == "bad_response" and raised.value.transient


async def test_paypal_without_the_orders_id_reads_nothing(http: httpx.AsyncClient) -> None:
    """PayPal lists refunds with the order only: without its id nothing is asked (no route
    here: any request would fail the test), and the `PayPal-Request-Id` is all there is."""
    config = PayPalConfig("client", SecretStr("secret"), "WH-1", api_base=PAYPAL)
    with respx.mock():
        found = await PayPalProvider(config, http).find_refund(_request(payment_id="3C0CAPTURE"))
    assert (found.found, found.refunded) == (None, None)

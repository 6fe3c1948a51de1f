"""The sandbox keeps its refunds as a provider does: one refund per refund id, read back."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.orders.models import SandboxPayment
from simcharge.payments.providers import (
    Checkout,
    CheckoutRequest,
    PaymentFlow,
    ProviderError,
    RefundRequest,
    RefundState,
)
from simcharge.payments.sandbox import SandboxProvider, act


async def paid_checkout(
    db: Database, settings: Settings, reference: str, amount: int = 1000
) -> tuple[SandboxProvider, Checkout]:
    """A sandbox checkout of `amount` USD under `reference`, paid by the payer."""
    sandbox = SandboxProvider(db, settings)
    checkout = await sandbox.create_checkout(
        CheckoutRequest(
            reference=reference,
            amount=amount,
            currency="USD",
            description="eSIM top-up",
            return_url="http://testserver/return",
            cancel_url="http://testserver/cancel",
            notify_url="http://testserver/api/v1/webhooks/sandbox",
            expires_at=utcnow() + timedelta(hours=1),
            language="en",
            flow=PaymentFlow.redirect,
            idempotency_key=reference,
        )
    )
    await act(db, settings, checkout.provider_ref, "pay")
    return sandbox, checkout


async def test_a_refund_id_is_refunded_once_and_read_back(db: Database, settings: Settings) -> None:
    sandbox, checkout = await paid_checkout(db, settings, "SBXREFUND01")
    request = RefundRequest("SBXREFUND01", checkout.provider_ref, "RF1", 400, 1000, "USD", None)
    first = await sandbox.refund(request)
    again = await sandbox.refund(request)  # a repeat (its answer was lost): the same refund
    assert first == again
    assert (first.state, first.amount, first.provider_refund_id) == (
        RefundState.succeeded, 400, "rf_RF1")
    assert await sandbox.query_refund(request, first.provider_refund_id) == first
    other = RefundRequest("SBXREFUND01", checkout.provider_ref, "RF2", 400, 1000, "USD", None)
    with pytest.raises(ProviderError) as caught:
        await sandbox.query_refund(other, None)
    assert (caught.value.code, caught.value.transient) == ("no_such_refund", False)
    async with db.read() as s:
        row = (
            await s.execute(select(SandboxPayment).where(SandboxPayment.reference == "SBXREFUND01"))
        ).scalar_one()
    assert (row.refunded, row.refunds) == (400, {"RF1": 400})  # taken once

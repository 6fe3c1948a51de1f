"""Payment statuses, refund results and disputes as JSON (kept with the events that reported them)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from simcharge.payments.providers import (
    Dispute,
    ListedRefund,
    PaymentState,
    PaymentStatus,
    RefundResult,
    RefundState,
)


def status_to_json(s: PaymentStatus) -> dict[str, Any]:
    return {
        "state": s.state.value,
        "reference": s.reference,
        "provider_ref": s.provider_ref,
        "payment_id": s.payment_id,
        "amount": s.amount,
        "currency": s.currency,
        "merchant": s.merchant,
        "paid_at": s.paid_at.isoformat() if s.paid_at else None,
        "provider_state": s.provider_state,
        "refunded_amount": s.refunded_amount,
        "refunds": [
            {"refund_id": r.refund_id, "amount": r.amount, "our_reference": r.our_reference}
            for r in s.refunds
        ],
    }


def status_from_json(d: dict[str, Any]) -> PaymentStatus:
    return PaymentStatus(
        state=PaymentState(d["state"]),
        reference=d.get("reference"),
        provider_ref=d.get("provider_ref"),
        payment_id=d.get("payment_id"),
        amount=d.get("amount"),
        currency=d.get("currency"),
        merchant=d.get("merchant"),
        paid_at=datetime.fromisoformat(d["paid_at"]) if d.get("paid_at") else None,
        raw={},
        provider_state=d.get("provider_state"),
        refunded_amount=d.get("refunded_amount"),
        refunds=tuple(
            ListedRefund(str(r["refund_id"]), int(r["amount"]), r.get("our_reference"))
            for r in d.get("refunds") or []
        ),
    )


def refund_to_json(r: RefundResult) -> dict[str, Any]:
    return {
        "refund_id": r.refund_id,
        "provider_refund_id": r.provider_refund_id,
        "state": r.state.value,
        "amount": r.amount,
        "currency": r.currency,
        "reference": r.reference,
        "payment_id": r.payment_id,
    }


def refund_from_json(d: dict[str, Any]) -> RefundResult:
    return RefundResult(
        refund_id=d["refund_id"],
        provider_refund_id=d.get("provider_refund_id"),
        state=RefundState(d["state"]),
        amount=int(d["amount"]),
        currency=d["currency"],
        raw={},
        reference=d.get("reference"),
        payment_id=d.get("payment_id"),
    )


def dispute_to_json(d: Dispute) -> dict[str, Any]:
    return {
        "dispute_id": d.dispute_id,
        "amount": d.amount,
        "currency": d.currency,
        "reason": d.reason,
        "dispute_status": d.dispute_status,
        "payment_id": d.payment_id,
        "reference": d.reference,
    }


def dispute_from_json(d: dict[str, Any]) -> Dispute:
    return Dispute(
        dispute_id=d["dispute_id"],
        amount=d.get("amount"),
        currency=d.get("currency"),
        reason=d.get("reason"),
        dispute_status=d.get("dispute_status"),
        payment_id=d.get("payment_id"),
        reference=d.get("reference"),
    )

"""The `Idempotency-Key` a request that must never be done twice carries (an order, a refund, a
manual adjustment): a retry or a copy with the same key answers what the first one did."""

from __future__ import annotations

from typing import Annotated

from fastapi import Header

from simcharge.errors import IdempotencyKeyMissing
from simcharge.kit.translations import N_

IDEMPOTENCY_KEY_MAX = 128
"""The longest key kept (the tables' columns)."""

IdempotencyKeyHeader = Annotated[
    str | None, Header(alias="Idempotency-Key", max_length=IDEMPOTENCY_KEY_MAX)
]


def required_idempotency_key(key: str | None) -> str:
    """`key`, if there is one that fits; else 400 `idempotency-key-missing` (whether it came in
    the header or in a page's form)."""
    if not key or len(key) > IDEMPOTENCY_KEY_MAX:
        raise IdempotencyKeyMissing(
            N_("An Idempotency-Key header is required."), field="Idempotency-Key"
        )
    return key

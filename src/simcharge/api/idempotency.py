"""The `Idempotency-Key` header of a request that must never be done twice (an order, a refund,
a manual adjustment); the rule itself is `errors.required_idempotency_key`, which the services
apply whichever edge the key came through."""

from __future__ import annotations

from typing import Annotated

from fastapi import Header

from simcharge.errors import IDEMPOTENCY_KEY_MAX

IdempotencyKeyHeader = Annotated[
    str | None, Header(alias="Idempotency-Key", max_length=IDEMPOTENCY_KEY_MAX)
]

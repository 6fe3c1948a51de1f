"""Identifiers: time-ordered UUIDv7 for new rows, UUIDv5 for ids derived from business keys."""

from __future__ import annotations

import os
import time
import uuid

# The namespace for ids derived from business keys (transfer ids of an order, a usage record…).
SIMCHARGE_NAMESPACE = uuid.UUID("5f1d7c2e-3b8a-4c6e-9a0d-6b2f4e8c1a37")


def uuid7() -> uuid.UUID:
    """A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then randomness; sorts by creation."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a, 12 bits
    value |= 0b10 << 62  # variant
    value |= rand & ((1 << 62) - 1)  # rand_b, 62 bits
    return uuid.UUID(int=value)


def derived_id(*parts: object) -> uuid.UUID:
    """A stable id for a business fact, so that doing it twice names the same row."""
    return uuid.uuid5(SIMCHARGE_NAMESPACE, ":".join(str(p) for p in parts))

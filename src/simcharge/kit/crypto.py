"""Keys derived from `SIMCHARGE_SECRET_KEY`, sealing (AES-256-GCM) and keyed hashes.

Each use has its own purpose string, so one derived key never serves two ends.

The key ring: `Settings.secret_keys`, the current key first, then the previous ones
(`SIMCHARGE_SECRET_KEY_PREVIOUS`). New values are sealed and hashed under the current key only
(`seal`, `keyed_hash`); what must outlive a rotation (TOTP secrets, recovery codes, a queued
code) is read with the ring (`unseal_any`, `keyed_hash_matches`, `keyed_hashes`); what must not
(sessions, CSRF tokens, throttle keys) stays with the current key alone. README, "Rotating the secret key"."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Sequence
from functools import lru_cache

import structlog
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

log = structlog.get_logger("simcharge.crypto")

Ring = str | Sequence[str]
"""One key (the current one), or the ring, current key first."""


class SealBroken(ValueError):
    """A sealed value was tampered with, or sealed under another key or purpose."""


def as_ring(keys: Ring) -> tuple[str, ...]:
    """The ring `keys` names: one key alone is a ring of one."""
    ring = (keys,) if isinstance(keys, str) else tuple(keys)
    if not ring:
        raise ValueError("a key ring holds at least the current key")
    return ring


def key_id(secret: str) -> str:
    """A short public name of a key (8 hex characters), to tell keys apart in a report; it
    reveals nothing of the key."""
    return hmac.new(derive_key(secret, "key-id"), b"simcharge", hashlib.sha256).hexdigest()[:8]


@lru_cache(maxsize=64)
def derive_key(secret: str, purpose: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=f"simcharge:{purpose}".encode()
    ).derive(secret.encode())


def keyed_hash(secret: str, purpose: str, value: str) -> str:
    """HMAC-SHA256 of `value` under a key derived for `purpose` (hex)."""
    return hmac.new(derive_key(secret, purpose), value.encode(), hashlib.sha256).hexdigest()


def seal(secret: str, purpose: str, plaintext: bytes) -> str:
    nonce = os.urandom(12)
    box = AESGCM(derive_key(secret, purpose)).encrypt(nonce, plaintext, purpose.encode())
    return base64.urlsafe_b64encode(nonce + box).decode()


def unseal(secret: str, purpose: str, sealed: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(sealed.encode())
        return AESGCM(derive_key(secret, purpose)).decrypt(raw[:12], raw[12:], purpose.encode())
    except Exception as exc:
        raise SealBroken(purpose) from exc


def unseal_any(keys: Ring, purpose: str, sealed: str) -> tuple[bytes, bool]:
    """Open `sealed` with the first key of the ring that opens it: its plaintext, and whether
    that key is the current one (False: re-seal it under the current key when convenient).
    No key opens it: `SealBroken`, logged as `crypto.seal_broken` with the purpose and how many
    keys were tried (never a key or the value)."""
    ring = as_ring(keys)
    for index, secret in enumerate(ring):
        try:
            return unseal(secret, purpose, sealed), index == 0
        except SealBroken:
            continue
    log.warning("crypto.seal_broken", purpose=purpose, keys_tried=len(ring))
    raise SealBroken(purpose)


def resealed(keys: Ring, purpose: str, sealed: str) -> str | None:
    """`sealed` sealed again under the current key, or None when it already is (`SealBroken`
    when no key of the ring opens it)."""
    ring = as_ring(keys)
    plaintext, current = unseal_any(ring, purpose, sealed)
    return None if current else seal(ring[0], purpose, plaintext)


def keyed_hashes(keys: Ring, purpose: str, value: str) -> list[str]:
    """`keyed_hash` of `value` under each key of the ring, current key first: what a stored
    hash may equal (to look it up: `column.in_(…)`)."""
    return [keyed_hash(secret, purpose, value) for secret in as_ring(keys)]


TAG_AT = 56
"""Where a tagged hash's key id begins (`tagged_hash`)."""


def tagged_hash(secret: str, purpose: str, value: str) -> str:
    """`keyed_hash` cut to 56 hex characters (224 bits), then the key's `key_id`: 64 characters
    as a plain one, and it tells which key of the ring made it (`hash_key_id`) — for hashes kept
    long, which cannot be re-hashed under a new key (recovery codes)."""
    return keyed_hash(secret, purpose, value)[:TAG_AT] + key_id(secret)


def tagged_hashes(keys: Ring, purpose: str, value: str) -> list[str]:
    """What a stored hash of `value` may equal under the ring: for each key its `tagged_hash`,
    and its plain `keyed_hash` (made before hashes were tagged)."""
    found = []
    for secret in as_ring(keys):
        plain = keyed_hash(secret, purpose, value)
        found += [plain[:TAG_AT] + key_id(secret), plain]
    return found


def hash_key_id(stored: str) -> str:
    """The key id a `tagged_hash` ends with (of a plain hash: 8 characters that name no key)."""
    return stored[TAG_AT:]


def keyed_hash_matches(keys: Ring, purpose: str, value: str, stored: str) -> bool:
    """Whether `stored` is the keyed hash of `value` under some key of the ring (each compared
    in constant time, all of them, whichever matches)."""
    matched = False
    for digest in keyed_hashes(keys, purpose, value):
        matched |= constant_time_equals(digest, stored)
    return matched


def constant_time_equals(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())

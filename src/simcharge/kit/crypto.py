"""Keys derived from `SIMCHARGE_SECRET_KEY`, sealing (AES-256-GCM) and keyed hashes.

Each use has its own purpose string, so one derived key never serves two ends; rotating the
secret key invalidates everything sealed or hashed with it (sessions, codes, TOTP secrets)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from functools import lru_cache

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class SealBroken(ValueError):
    """A sealed value was tampered with, or sealed under another key or purpose."""


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


def constant_time_equals(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())

"""Passwords: NIST SP 800-63B rules, argon2id hashes (argon2-cffi's RFC 9106 profile).

8 to 128 characters after NFKC normalisation, any characters, no composition rules; refused if
it is a common or breached password (the 11,611 entries of 8 characters or more in a list shipped
with simcharge; shorter ones are refused by length first) or the account's own username or
e-mail address.

Every argon2id computation is counted (`simcharge_password_hashes_total`): the cost of a request
that takes a password, the same whether the account exists or not, is visible in the metrics."""

from __future__ import annotations

import asyncio
import unicodedata
from functools import lru_cache
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from prometheus_client import Counter

from simcharge.errors import ValidationFailed
from simcharge.kit.translations import N_

MIN_LENGTH = 12
"""ASVS 4.0 V2.1.1: at least 12 characters (after normalisation)."""
MAX_LENGTH = 128
COMMON_PASSWORDS = Path(__file__).resolve().parent / "data" / "common-passwords.txt"

PASSWORD_HASHES = Counter(
    "simcharge_password_hashes_total",
    "argon2id computations: `hash` (a new password) or `verify` (a password checked; an "
    "unknown login is checked against a dummy hash, at the same cost)",
    ["operation"],
)


@lru_cache(maxsize=1)
def hasher() -> PasswordHasher:
    return PasswordHasher()


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    """The entries that can match: a password shorter than `MIN_LENGTH` is refused before the
    list is consulted, so the list's shorter entries are left out."""
    lines = COMMON_PASSWORDS.read_text(encoding="utf-8").splitlines()
    return frozenset(
        text
        for line in lines
        if line and not line.startswith("#")
        for text in [normalize_password(line).casefold()]
        if MIN_LENGTH <= len(text) <= MAX_LENGTH
    )


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return hasher().hash("not a password anyone has")


def normalize_password(password: str) -> str:
    return unicodedata.normalize("NFKC", password)


def check_password_policy(
    password: str, *, username: str | None = None, email: str | None = None, field: str = "password"
) -> None:
    """Raise `ValidationFailed` (naming `field`) if the password may not be used."""
    text = normalize_password(password)
    if len(text) < MIN_LENGTH:
        raise ValidationFailed(
            N_("The password needs at least {min} characters."), field=field, min=MIN_LENGTH
        )
    if len(text) > MAX_LENGTH:
        raise ValidationFailed(
            N_("The password may have at most {max} characters."), field=field, max=MAX_LENGTH
        )
    lowered = text.casefold()
    if lowered in common_passwords():
        raise ValidationFailed(
            N_("This password is too common or has appeared in a data breach; choose another."),
            field=field,
        )
    own = {v.casefold() for v in (username, email) if v}
    if email:
        own.add(email.split("@", 1)[0].casefold())
    if lowered in own:
        raise ValidationFailed(
            N_("The password may not be your username or e-mail address."), field=field
        )


def hash_password(password: str) -> str:
    PASSWORD_HASHES.labels("hash").inc()
    return hasher().hash(normalize_password(password))


def verify_password(password_hash: str | None, password: str) -> bool:
    """Check a password; with no hash (an unknown account) do the same work and say no, so
    that both cases take the same time."""
    PASSWORD_HASHES.labels("verify").inc()
    try:
        if password_hash is None:
            hasher().verify(_dummy_hash(), normalize_password(password) + "\0")
            return False
        return hasher().verify(password_hash, normalize_password(password))
    except (VerificationError, InvalidHashError):
        return False


async def hashed(password: str) -> str:
    """`hash_password` in a worker thread: argon2id takes tenths of a second of CPU (and
    releases the GIL), which on the event loop would stall every other request of the process —
    and could push a concurrent request's Redis call past its deadline."""
    return await asyncio.to_thread(hash_password, password)


async def verified(password_hash: str | None, password: str) -> bool:
    """`verify_password` in a worker thread (see `hashed`)."""
    return await asyncio.to_thread(verify_password, password_hash, password)


def needs_rehash(password_hash: str) -> bool:
    return hasher().check_needs_rehash(password_hash)

"""Fixtures of the provider adapter tests: keys made at test time, an httpx client, a fixed now."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from simcharge.kit.clock import clock

NOW = datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC)


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def private_pem(key: rsa.RSAPrivateKey, *, pkcs1: bool = False) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL if pkcs1 else serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="session")
def merchant_key() -> rsa.RSAPrivateKey:
    """Our key: signs what we send (Alipay app key, WeChat Pay merchant API key)."""
    return new_rsa_key()


@pytest.fixture(scope="session")
def provider_key() -> rsa.RSAPrivateKey:
    """The provider's key: signs what it sends us; we hold its public half."""
    return new_rsa_key()


@pytest.fixture(scope="session")
def stranger_key() -> rsa.RSAPrivateKey:
    """Someone else's key: what it signs must be refused."""
    return new_rsa_key()


@pytest.fixture
def frozen_now() -> datetime:
    clock.freeze(NOW)
    return NOW


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client

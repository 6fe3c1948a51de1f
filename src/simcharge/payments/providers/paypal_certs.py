"""PayPal's webhook signing certificates: which URLs we fetch, and which certificates we trust.

A webhook names the certificate that signed it (`PAYPAL-CERT-URL`). Fetching any URL a request
names would let anyone sign with their own key, so the URL must be PayPal's certificate path on
an allowed host, and the certificate must chain to a trusted CA, be valid now, and be issued
to `messageverificationcerts….paypal.com`.
"""

from __future__ import annotations

import re
import warnings
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from functools import lru_cache
from urllib.parse import urlsplit

import certifi
import httpx
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import (
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from simcharge.payments.providers._common import send
from simcharge.payments.providers.base import ProviderError

DEFAULT_CERT_HOSTS = frozenset(
    {"api.paypal.com", "api.sandbox.paypal.com", "api-m.paypal.com", "api-m.sandbox.paypal.com"}
)
CERT_PATH_PREFIX = "/v1/notifications/certs/"
SUBJECT_PATTERN = re.compile(
    r"^messageverificationcerts(\.[a-z0-9-]+)*\.paypal\.com$", re.IGNORECASE
)

CertificateFetcher = Callable[[str], Awaitable[bytes]]
"""Fetches the PEM at an (already allowed) certificate URL."""


class CertificateRejected(ValueError):
    """The certificate does not prove that PayPal signed the message."""


def cert_url_allowed(url: str, hosts: frozenset[str]) -> bool:
    """Whether `url` is `https://<allowed host>/v1/notifications/certs/<id>` and nothing more."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    cert_id = parts.path.removeprefix(CERT_PATH_PREFIX)
    return (
        parts.scheme == "https"
        and parts.netloc == parts.hostname
        and parts.hostname in hosts
        and port is None
        and not parts.query
        and not parts.fragment
        and parts.path.startswith(CERT_PATH_PREFIX)
        and re.fullmatch(r"[A-Za-z0-9_-]+", cert_id) is not None
    )


def _subject_names(cert: x509.Certificate) -> list[str]:
    names = [
        str(attribute.value)
        for attribute in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ]
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return names
    return names + san.value.get_values_for_type(x509.DNSName)


def verify_certificate_chain(
    pem: bytes, trust: Sequence[x509.Certificate], now: datetime
) -> rsa.RSAPublicKey:
    """The signing key of PayPal's certificate in `pem` (leaf first, then any intermediates).

    Raises `CertificateRejected` unless the leaf is valid at `now`, is issued to
    `messageverificationcerts….paypal.com` and chains to one of `trust`.
    """
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise CertificateRejected("not a PEM certificate") from exc
    leaf, intermediates = certs[0], certs[1:]
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        raise CertificateRejected("the certificate is not valid now")
    if not any(SUBJECT_PATTERN.match(name) for name in _subject_names(leaf)):
        raise CertificateRejected(
            "the certificate is not PayPal's message verification certificate"
        )
    if not trust:
        raise CertificateRejected("no trusted certificate authority")
    # PayPal's leaf is not a TLS server certificate: the web-PKI rules apply to the CAs only.
    verifier = (
        PolicyBuilder()
        .store(Store(list(trust)))
        .time(now)
        .extension_policies(
            ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ExtensionPolicy.permit_all()
        )
        .build_client_verifier()
    )
    try:
        verifier.verify(leaf, intermediates)
    except VerificationError as exc:
        raise CertificateRejected(f"the certificate does not chain to a trusted CA: {exc}") from exc
    key = leaf.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise CertificateRejected("the certificate's key is not RSA")
    return key


@lru_cache(maxsize=1)
def system_trust_store() -> tuple[x509.Certificate, ...]:
    """The CAs of `certifi` (the bundle httpx verifies TLS with)."""
    with open(certifi.where(), "rb") as bundle:
        data = bundle.read()
    found: list[x509.Certificate] = []
    for block in data.split(b"-----END CERTIFICATE-----"):
        start = block.find(b"-----BEGIN CERTIFICATE-----")
        if start < 0:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)  # old CAs' serials
            try:
                cert = x509.load_pem_x509_certificate(block[start:] + b"-----END CERTIFICATE-----")
            except ValueError:
                continue  # a CA this parser refuses cannot anchor anything either
        found.append(cert)
    return tuple(found)


def http_certificate_fetcher(
    client: httpx.AsyncClient, *, time_limit: float = 10.0
) -> CertificateFetcher:
    """Fetch over the application's httpx client (TLS verified as the client is configured)."""

    async def fetch(url: str) -> bytes:
        response = await send(client, "paypal", "GET", url, time_limit=time_limit)
        if response.status_code != 200:
            raise ProviderError(
                "paypal",
                "certificate_unavailable",
                f"the certificate URL answered {response.status_code}",
                transient=True,
                status=response.status_code,
            )
        return response.content

    return fetch


class CertificateCache:
    """Fetched certificates by URL (PayPal reuses one for months), a bounded number of them."""

    def __init__(self, fetch: CertificateFetcher, *, size: int = 16) -> None:
        self._fetch = fetch
        self._size = size
        self._pems: OrderedDict[str, bytes] = OrderedDict()

    async def get(self, url: str) -> bytes:
        if url in self._pems:
            self._pems.move_to_end(url)
            return self._pems[url]
        pem = await self._fetch(url)
        self._pems[url] = pem
        while len(self._pems) > self._size:
            self._pems.popitem(last=False)
        return pem

    def forget(self, url: str) -> None:
        """Drop a certificate that did not verify, so that the next delivery fetches it again."""
        self._pems.pop(url, None)

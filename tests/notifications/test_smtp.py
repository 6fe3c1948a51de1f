"""SMTP with a username and password, over STARTTLS or implicit TLS, against a real aiosmtpd
server that demands both (its certificate is trusted through `SSL_CERT_FILE`, as an operator
would trust a private CA)."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from simcharge.config import Settings
from simcharge.db import Database
from simcharge.kit.clock import utcnow
from simcharge.notifications.service import notify
from simcharge.worker.models import JobStatus, OutboxJob
from simcharge.worker.runner import Worker
from tests.conftest import SmtpInbox
from tests.factories import create_account

USERNAME, PASSWORD = "mailer", "smtp-pass-Very-Secret-42"

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (its own CA) and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "simcharge test SMTP")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "smtp.pem", directory / "smtp.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


class Guarded(SmtpInbox):
    """Keeps what it receives, and who signed in to send it."""

    def __init__(self) -> None:
        super().__init__()
        self.logins: list[tuple[str, bool]] = []

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == USERNAME.encode()
            and auth_data.password == PASSWORD.encode()
        )
        self.logins.append((auth_data.login.decode(), ok))
        return AuthResult(success=ok, handled=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def tls_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    cert_file, key_file = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))  # the client's trust store
    return cert_file, key_file


def server_context(files: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*files)
    return context


@pytest.fixture(params=["starttls", "tls"])
def guarded_server(
    request: pytest.FixtureRequest, tls_files: tuple[Path, Path]
) -> Iterator[tuple[Guarded, int, str]]:
    """A server that takes mail only from a signed-in client, and only over TLS: STARTTLS on a
    plain connection (required before anything else), or TLS from the first byte."""
    inbox, port, mode = Guarded(), free_port(), str(request.param)
    options: dict[str, Any] = {"authenticator": inbox.authenticate, "auth_required": True}
    if mode == "starttls":
        options |= {
            "tls_context": server_context(tls_files),
            "require_starttls": True,
            "auth_require_tls": True,
        }
    else:
        # TLS from the first byte: aiosmtpd's `auth_require_tls` only knows STARTTLS (and would
        # refuse AUTH here), so it is off — and the warning that it is off, silenced below.
        options |= {"ssl_context": server_context(tls_files), "auth_require_tls": False}
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **options)
    controller.start()
    yield inbox, port, mode
    controller.stop()


async def mail_one(db: Database, settings: Settings) -> OutboxJob:
    async def make(s: AsyncSession) -> uuid.UUID:
        account = await create_account(
            s, email=f"{uuid.uuid4().hex[:8]}@example.com", email_verified_at=utcnow()
        )
        await notify(s, account_id=account.id, template="security.password_changed",
                     channels=["email"])
        return account.id

    await db.run(make)
    worker = Worker(db, settings, concurrency=2)
    try:
        await worker.drain()
    finally:
        await worker.close()
    async with db.read() as s:
        return (
            await s.execute(select(OutboxJob).where(OutboxJob.kind == "notifications.email"))
        ).scalar_one()


def over(settings: Settings, port: int, mode: str, password: str = PASSWORD) -> Settings:
    return settings.model_copy(
        update={
            "smtp_port": port,
            "smtp_tls": mode,
            "smtp_username": USERNAME,
            "smtp_password": SecretStr(password),
        }
    )


async def test_mail_goes_out_signed_in_over_tls(
    db: Database, settings: Settings, guarded_server: tuple[Guarded, int, str]
) -> None:
    inbox, port, mode = guarded_server
    job = await mail_one(db, over(settings, port, mode))
    assert job.status == JobStatus.done, job.last_error
    [mail] = inbox.messages
    assert mail["Subject"] == "Your password was changed"
    assert inbox.logins == [(USERNAME, True)]
    # RFC 5322's one required header besides From: when it was written, by our clock.
    sent_at = parsedate_to_datetime(str(mail["Date"]))
    assert sent_at.tzinfo is not None and abs(utcnow() - sent_at) < timedelta(minutes=1)


async def test_a_refused_password_is_retried_and_never_logged(
    db: Database, settings: Settings, guarded_server: tuple[Guarded, int, str]
) -> None:
    inbox, port, mode = guarded_server
    wrong = "not-the-smtp-password-7"
    job = await mail_one(db, over(settings, port, mode, wrong))
    assert job.status == JobStatus.pending and job.attempts == 1
    assert "SMTP" in (job.last_error or "") and wrong not in (job.last_error or "")
    assert inbox.messages == [] and inbox.logins  # each mechanism tried, each refused
    assert all(login == (USERNAME, False) for login in inbox.logins)


async def test_without_tls_the_server_takes_nothing(
    db: Database, settings: Settings, guarded_server: tuple[Guarded, int, str]
) -> None:
    """`none` really sends in the clear: a server that demands TLS refuses it (so `starttls`
    and `tls` above are what made the difference)."""
    inbox, port, _ = guarded_server
    job = await mail_one(db, over(settings, port, "none"))
    assert job.status == JobStatus.pending and "SMTP" in (job.last_error or "")
    assert inbox.messages == [] and inbox.logins == []

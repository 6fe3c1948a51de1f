"""Test fixtures: the real databases, the app, factories.

Every test that asks for `db`, `session` or `client` runs once on SQLite and, when
`SIMCHARGE_TEST_POSTGRES_URL` is set (a server where tests may create and drop databases),
once more on PostgreSQL. Each xdist worker migrates its own template database once; tests run
inside an outer transaction that is rolled back afterwards (`db`, `session`), or on a fresh copy
of the template when they need several real connections (`fresh_db`).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiosmtpd.controller import Controller
from hypothesis import settings as hypothesis_settings
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from simcharge import migrate
from simcharge.app import create_app
from simcharge.config import Environment, Settings
from simcharge.db import Database, create_engine
from simcharge.kit.clock import clock
from simcharge.notifications.transports import dev_mailbox
from simcharge.worker.runner import Worker

hypothesis_settings.register_profile("default", max_examples=40)
hypothesis_settings.register_profile("thorough", max_examples=600)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

PG_URL = os.environ.get("SIMCHARGE_TEST_POSTGRES_URL")
BACKENDS = ["sqlite", *(["postgresql"] if PG_URL else [])]
TEST_SECRET = "test-secret-key-that-is-long-enough-0123456789"


def _pg_url(database: str) -> str:
    assert PG_URL
    url = make_url(PG_URL).set(drivername="postgresql+asyncpg", database=database)
    return url.render_as_string(hide_password=False)


def _pg_admin_dsn() -> str:
    assert PG_URL
    url = make_url(PG_URL).set(drivername="postgresql", database="postgres")
    return url.render_as_string(hide_password=False)


async def _pg_create(name: str, template: str | None = None) -> None:
    conn = await asyncpg.connect(_pg_admin_dsn())
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        suffix = f' TEMPLATE "{template}"' if template else ""
        await conn.execute(f'CREATE DATABASE "{name}"{suffix}')
    finally:
        await conn.close()


async def _pg_drop(name: str) -> None:
    conn = await asyncpg.connect(_pg_admin_dsn())
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


# Databases this process creates are named after its pid, so that several test runs (other
# checkouts, other xdist workers) can share one server; leftovers of dead runs are dropped.
RUN_TAG = f"p{os.getpid()}"


async def _drop_leftovers() -> None:
    conn = await asyncpg.connect(_pg_admin_dsn())
    try:
        names = [
            r[0]
            for r in await conn.fetch(
                "SELECT datname FROM pg_database WHERE datname LIKE 'simcharge\\_%\\_p%'"
            )
        ]
        for name in names:
            pid = name.rsplit("_p", 1)[-1]
            if pid.isdigit() and not _alive(int(pid)):
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Backend:
    """One database server kind, with a migrated template to copy from."""

    def __init__(self, kind: str, worker: str, tmp: Path) -> None:
        self.kind = kind
        self.worker = RUN_TAG
        self.tmp = tmp
        self.template_url = ""
        self._sqlite_template: Path | None = None

    @property
    def is_postgres(self) -> bool:
        return self.kind == "postgresql"

    async def prepare(self) -> None:
        if self.is_postgres:
            await _drop_leftovers()
            name = f"simcharge_tpl_{self.worker}"
            await _pg_create(name)
            self.template_url = _pg_url(name)
        else:
            self._sqlite_template = self.tmp / "template.db"
            self.template_url = f"sqlite+aiosqlite:///{self._sqlite_template}"
        engine = create_engine(self.template_url, null_pool=True)
        await migrate.upgrade(engine)
        await engine.dispose()

    async def copy(self, label: str) -> str:
        """A new database with the migrated schema; returns its URL."""
        if self.is_postgres:
            name = f"simcharge_{label}_{self.worker}"
            await _pg_create(name, template=f"simcharge_tpl_{self.worker}")
            return _pg_url(name)
        assert self._sqlite_template is not None
        target = self.tmp / f"{label}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(self._sqlite_template, target)
        return f"sqlite+aiosqlite:///{target}"

    async def discard(self, url: str) -> None:
        if self.is_postgres:
            await _pg_drop(make_url(url).database or "")
        else:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{make_url(url).database}{suffix}").unlink(missing_ok=True)


@pytest.fixture(scope="session")
def worker_name(request: pytest.FixtureRequest) -> str:
    return str(getattr(request.config, "workerinput", {}).get("workerid", "main"))


@pytest.fixture(scope="session", params=BACKENDS)
async def backend(
    request: pytest.FixtureRequest, worker_name: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Backend]:
    b = Backend(request.param, worker_name, tmp_path_factory.mktemp(request.param))
    await b.prepare()
    yield b
    if b.is_postgres:
        await _pg_drop(f"simcharge_tpl_{b.worker}")


@pytest.fixture(scope="session")
async def engine(backend: Backend) -> AsyncIterator[AsyncEngine]:
    url = await backend.copy("shared")
    eng = create_engine(url, pool_size=2)
    yield eng
    await eng.dispose()
    await backend.discard(url)


@pytest.fixture
async def connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    async with engine.connect() as conn:
        outer = await conn.begin()
        try:
            yield conn
        finally:
            await outer.rollback()


@pytest.fixture
async def db(connection: AsyncConnection) -> Database:
    """A `Database` whose every transaction is a savepoint in the test's outer transaction."""
    return Database.bound_to(connection)


@pytest.fixture
async def session(db: Database) -> AsyncIterator[AsyncSession]:
    async with db.transaction() as s:
        yield s


@pytest.fixture
async def fresh_db(backend: Backend, request: pytest.FixtureRequest) -> AsyncIterator[Database]:
    """A database of its own, with real connections and real commits; dropped afterwards."""
    url = await backend.copy("t" + uuid.uuid4().hex[:10])
    database = Database.from_url(url, pool_size=40)
    yield database
    await database.dispose()
    await backend.discard(url)


class SmtpInbox:
    """A real SMTP server (aiosmtpd) on a free port; keeps what it receives."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelope_senders: dict[int, str] = {}
        """The envelope's `MAIL FROM` of each message, by its index in `messages`."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = BytesParser(policy=policy.default).parsebytes(envelope.content)
        assert isinstance(message, EmailMessage)
        self.envelope_senders[len(self.messages)] = envelope.mail_from
        self.messages.append(message)
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if address in str(m["To"])]

    def last_code(self, address: str) -> str:
        """The code in the newest e-mail to `address` that carries one."""
        mails = self.to(address)
        assert mails, f"no e-mail to {address}"
        for mail in reversed(mails):
            body = mail.get_body(preferencelist=("plain",))
            found = re.findall(r"\b(\d{6})\b", body.get_content() if body else "")
            if found:
                return str(found[-1])
        raise AssertionError(f"no e-mail with a code to {address}")


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[tuple[SmtpInbox, int]]:
    inbox = SmtpInbox()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


@pytest.fixture
def inbox(smtp_server: tuple[SmtpInbox, int]) -> SmtpInbox:
    smtp_server[0].messages.clear()
    return smtp_server[0]


@pytest.fixture
def settings(smtp_server: tuple[SmtpInbox, int]) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        env=Environment.test,
        secret_key=TEST_SECRET,
        database_url="sqlite+aiosqlite:///unused.db",
        worker_in_process=False,
        base_url="http://testserver",
        smtp_host="127.0.0.1",
        smtp_port=smtp_server[1],
        smtp_tls="none",
        smtp_from="simcharge <no-reply@simcharge.test>",
        auth_min_response_ms=20,
    )


@pytest.fixture
async def app(settings: Settings, db: Database) -> Any:
    return create_app(settings, db=db, run_worker=False)


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


@pytest.fixture(autouse=True)
def _postgres_only(request: pytest.FixtureRequest) -> None:
    """`@pytest.mark.postgres_only`: the SQLite run of the test is skipped (it proves something
    only a server with concurrent writers can show, or what the marker's argument names)."""
    marker = request.node.get_closest_marker("postgres_only")
    if marker is None:
        return
    backend: Backend = request.getfixturevalue("backend")
    if not backend.is_postgres:
        pytest.skip(f"PostgreSQL only: {marker.args[0] if marker.args else 'concurrent writers'}")


@pytest.fixture(autouse=True)
def _real_clock() -> Iterator[None]:
    yield
    clock.unfreeze()


@pytest.fixture(autouse=True)
def _empty_dev_mailbox() -> Iterator[None]:
    dev_mailbox.clear()
    yield
    dev_mailbox.clear()


def last_sms_code(to: str) -> str:
    """The code in the newest SMS sent to `to` (the development outbox keeps them in tests)."""
    texts = [m.text for m in dev_mailbox if m.channel == "sms" and m.to == to]
    assert texts, f"no SMS to {to}"
    found = re.findall(r"\b(\d{6})\b", texts[-1])
    assert found, "no code in the SMS"
    return found[-1]


@pytest.fixture
def deliver(db: Database, settings: Settings) -> Callable[[], Awaitable[int]]:
    """Run the outbox worker until nothing is due (what `simcharge worker` does)."""

    async def run() -> int:
        worker = Worker(db, settings, concurrency=4)
        try:
            return await worker.drain()
        finally:
            await worker.close()

    return run


# --- the command line on a database of its own ------------------------------------------------


@pytest.fixture
async def cli_url(backend: Backend) -> AsyncIterator[str]:
    """A database of the test's backend, migrated, for CLI commands (which open their own)."""
    url = await backend.copy("cli")
    yield url
    await backend.discard(url)


@pytest.fixture
def cli_env(cli_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The process's settings name `cli_url` (the CLI reads `get_settings()`)."""
    from simcharge.config import get_settings

    monkeypatch.setenv("SIMCHARGE_DATABASE_URL", cli_url)
    monkeypatch.setenv("SIMCHARGE_ENV", "test")
    get_settings.cache_clear()
    yield cli_url
    get_settings.cache_clear()


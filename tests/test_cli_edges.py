"""The command line and the process's start at their edges: a rollback onto a newer schema, the
demo on a production database, values too long or not text, files not in UTF-8, settings that
cannot be read, a database down or hung, a port taken or out of range — each a line saying
what is wrong and an exit code, never a traceback or a half-done change."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, text
from typer.testing import CliRunner

from simcharge import cli
from simcharge.app import create_app
from simcharge.catalog.models import Plan
from simcharge.cli import app
from simcharge.config import Settings, get_settings
from simcharge.db import Database
from simcharge.demo import DEMO_PASSWORD
from tests.factories import iccid_for

runner = CliRunner()
STAFF_PASSWORD = "a-long-and-unusual-passphrase-9173"


@pytest.fixture(autouse=True)
def _staff_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """`staff create` reads the password from here instead of prompting."""
    monkeypatch.setenv("SIMCHARGE_STAFF_PASSWORD", STAFF_PASSWORD)


def _start(tmp_path: Path, command: list[str], timeout: float = 60,
           **settings: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIMCHARGE_")}
    env.update({f"SIMCHARGE_{k.upper()}": v for k, v in settings.items()})
    env.setdefault("SIMCHARGE_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/x.db")
    return subprocess.run(
        [str(Path(sys.executable).with_name("simcharge")), *command], env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=timeout, check=False,
    )


def test_the_previous_release_upgrading_a_newer_schema_has_nothing_to_do(cli_env: str) -> None:
    """Rolling back is redeploying the previous image, whose `migrate` runs first: a schema at
    a revision it does not know is newer, not broken."""
    async def newer(db: Database) -> None:
        async with db.transaction() as s:
            await s.execute(text("UPDATE alembic_version SET version_num = '0099_next_release'"))

    cli._run(newer)
    r = runner.invoke(app, ["db", "upgrade"])
    assert r.exit_code == 0, r.output
    assert "0099_next_release" in r.output and "nothing to apply" in r.output
    r = runner.invoke(app, ["db", "upgrade", "0098_typo"])
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.output


def test_the_demo_is_refused_on_a_production_database(
    cli_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SIMCHARGE_DATABASE_URL", cli_url)
    monkeypatch.setenv("SIMCHARGE_ENV", "production")
    monkeypatch.setenv("SIMCHARGE_SECRET_KEY", "k" * 48)
    monkeypatch.setenv("SIMCHARGE_BASE_URL", "https://topup.example.com")
    get_settings.cache_clear()
    try:
        demo = Path(__file__).parents[1] / "src/simcharge/catalog/demo.toml"
        own = tmp_path / "own.toml"
        own.write_text(demo.read_text(encoding="utf-8").replace('"starter-10"', '"our-plan"'),
                       encoding="utf-8")
        assert runner.invoke(app, ["catalog", "load", str(own)]).exit_code == 0
        r = runner.invoke(app, ["demo"])

        async def active(db: Database) -> bool:
            async with db.read() as s:
                return bool((await s.execute(
                    select(Plan.active).where(Plan.code == "our-plan"))).scalar_one())

        assert r.exit_code == 2 and DEMO_PASSWORD not in r.output
        assert cli._run(active)  # the operator's own plan is still on sale
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize("args", [
    ["apikey", "create", "--name", "n" * 200, "--scope", "lines:read"],
    ["apikey", "create", "--name", "a\x00b", "--scope", "lines:read"],
    ["staff", "create", "ops1", "--role", "admin", "--name", "N" * 300],
    ["staff", "create", "ops2", "--role", "admin", "--email", "e" * 250 + "@example.com"],
    ["staff", "create", "ops3", "--role", "admin", "--email", "not an address"],
    ["staff", "create", "ops4", "--role", "admin", "--name", "a\x00b"],
])
def test_values_too_long_or_not_text_are_refused_in_one_line(
    cli_env: str, args: list[str]
) -> None:
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), repr(r.exception)


def test_files_not_in_utf8_are_refused_in_one_line(cli_env: str, tmp_path: Path) -> None:
    sims = tmp_path / "sims.csv"
    sims.write_bytes(b"msisdn,iccid\n+14155557101," + iccid_for("+14155557101").encode()
                     + b"\n\xe9\n")
    r = runner.invoke(app, ["lines", "import", str(sims)])
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), repr(r.exception)
    catalog = tmp_path / "catalog.toml"
    catalog.write_bytes(b"# caf\xe9\n[[zones]]\n")
    r = runner.invoke(app, ["catalog", "check", str(catalog)])
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), repr(r.exception)


@pytest.mark.parametrize(("setting", "value", "command"), [
    ("log_level", "verbose", ["worker", "--drain"]),
    ("lifecycle_warning_days", "7,1", ["db", "current"]),
    ("database_url", "postgres://simcharge@db/simcharge", ["db", "current"]),
])
def test_a_setting_that_cannot_be_used_is_one_line_and_exit_2(
    tmp_path: Path, setting: str, value: str, command: list[str]
) -> None:
    done = _start(tmp_path, command, env="test", **{setting: value})
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert f"SIMCHARGE_{setting.upper()}" in done.stderr


def test_a_database_down_a_port_taken_or_out_of_range_is_one_line(tmp_path: Path) -> None:
    done = _start(tmp_path, ["db", "current"], env="test",
                  database_url="postgresql+asyncpg://simcharge@127.0.0.1:1/simcharge")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "simcharge@" not in done.stderr  # no URL in the message
    assert _start(tmp_path, ["db", "upgrade"], env="test").returncode == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = _start(tmp_path, ["worker", "--metrics-port", str(taken.getsockname()[1])],
                      env="test")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    done = _start(tmp_path, ["serve", "--port", "70000"], timeout=20, env="test")
    assert done.returncode == 2


async def test_readiness_answers_503_when_the_database_hangs(settings: Settings) -> None:
    async def never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(3600)

    server = await asyncio.start_server(never, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    hung = Database.from_url(f"postgresql+asyncpg://postgres@127.0.0.1:{port}/x")
    app_ = create_app(settings, db=hung, run_worker=False)
    try:
        transport = httpx.ASGITransport(app=app_)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            r = await asyncio.wait_for(c.get("/readyz"), 10)
    finally:
        server.close()
        await hung.dispose()
    assert r.status_code == 503 and r.json()["database"] == "unreachable"

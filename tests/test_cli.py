"""The `simcharge` command, against a database of its own on each backend."""

from __future__ import annotations

import asyncio
import getpass
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
from sqlalchemy import select, text
from typer.testing import CliRunner

from simcharge import cli
from simcharge.cli import app
from simcharge.db import Database
from simcharge.demo import CUSTOMERS, DEMO_PASSWORD
from tests.factories import iccid_for

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command and group of the Typer app, with the words that invoke it (a group has
    `commands`; Typer's own Click and Click's classes alike)."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(typer.main.get_command(app)))


def test_the_command_tree_is_what_the_readme_documents() -> None:
    leaves = {" ".join(p) for p, c in COMMANDS if not hasattr(c, "commands")}
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    commands = readme.split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    for leaf in leaves:
        assert f"`simcharge {leaf}" in commands, f"simcharge {leaf} is not in README's Commands"
    assert len(leaves) >= 13


@pytest.mark.parametrize(
    ("path", "command"), COMMANDS, ids=[" ".join(p) or "simcharge" for p, _ in COMMANDS]
)
def test_every_command_and_group_has_help(path: tuple[str, ...], command: Any) -> None:
    code, out = invoke(*path, "--help")
    assert code == 0 and "Usage" in out, out
    described = [command.help or "", *(getattr(p, "help", None) or "" for p in command.params)]
    assert command.help, f"{path}: no description"
    for param in command.params:
        assert getattr(param, "help", None), f"{path}: {param.name} has no help"
    for paragraph in described:
        # A line break inside a paragraph shows as a break mid-sentence in the command lists.
        assert not re.search(r"[^\n]\n[^\n]", paragraph.strip()), f"{path}: {paragraph!r}"


def test_the_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("simcharge")
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True).stdout
    assert "catalog" in out and "lines" in out and "worker" in out


def test_upgrade_demo_twice_and_current(cli_env: str) -> None:
    code, out = invoke("db", "upgrade")
    assert code == 0 and "database at revision" in out
    code, out = invoke("db", "current")
    assert code == 0
    code, first = invoke("demo")
    assert code == 0 and DEMO_PASSWORD in first
    for c in CUSTOMERS:
        assert c.username in first and c.msisdns[0] in first
    code, second = invoke("demo")
    assert code == 0 and second == first


def test_ledger_verify_passes_on_the_demo_and_fails_on_tampered_books(cli_env: str) -> None:
    assert invoke("db", "upgrade")[0] == 0
    assert invoke("demo")[0] == 0
    code, out = invoke("ledger", "verify")
    assert code == 0, out
    assert "the ledger balances" in out and "USD      posted +0  pending +0" in out

    async def tamper(db: Database) -> None:
        async with db.transaction() as s:
            await s.execute(
                text(
                    "UPDATE ledger_accounts SET credits_posted = credits_posted + 1"
                    " WHERE code = 'wallet'"
                )
            )

    cli._run(tamper)
    code, out = invoke("ledger", "verify")
    assert code == 1
    assert "VIOLATION unit USD does not sum to zero" in out and "violation(s)" in out


def test_catalog_load_check_and_errors(cli_env: str, tmp_path: Path) -> None:
    demo = Path(__file__).parents[1] / "src/simcharge/catalog/demo.toml"
    code, out = invoke("catalog", "check", str(demo))
    assert code == 0 and "4 plans" in out
    code, out = invoke("catalog", "load", str(demo), "--dry-run")
    assert code == 0 and "created  plan starter-10" in out and "dry run" in out
    code, out = invoke("catalog", "load", str(demo))
    assert code == 0 and "created  plan starter-10" in out
    code, out = invoke("catalog", "load", str(demo))
    assert code == 0 and "created" not in out
    bad = tmp_path / "bad.toml"
    bad.write_text(
        demo.read_text(encoding="utf-8").replace('USD = "10.00"', 'USD = "10.005"'),
        encoding="utf-8",
    )
    code, out = invoke("catalog", "load", str(bad))
    assert code == 2
    assert (
        f"{bad}: plans[0] (starter-10): prices.USD: 10.005 has more decimals than USD allows" in out
    )
    code, out = invoke("catalog", "load", str(tmp_path / "missing.toml"))
    assert code == 2 and "cannot read the file" in out


def test_lines_import(cli_env: str, tmp_path: Path) -> None:
    csv = tmp_path / "sims.csv"
    csv.write_text(
        "msisdn,iccid,activation_code,imsi\n"
        f"+14155557101,{iccid_for('+14155557101')},LPA:1$smdp.example.com$A1,310150000007101\n"
        f"+14155557102,{iccid_for('+14155557102')},,\n",
        encoding="utf-8",
    )
    code, out = invoke("lines", "import", str(csv))
    assert code == 0 and "2 line(s) imported, 0 already present" in out
    code, out = invoke("lines", "import", str(csv))
    assert code == 0 and "0 line(s) imported, 2 already present" in out
    broken = tmp_path / "broken.csv"
    broken.write_text("msisdn,iccid\n+14155557103,123\n", encoding="utf-8")
    code, out = invoke("lines", "import", str(broken))
    assert code == 2 and f"{broken}: line 2: iccid" in out and "nothing imported" in out
    clash = tmp_path / "clash.csv"
    clash.write_text(f"msisdn,iccid\n+14155557104,{iccid_for('+14155557101')}\n", encoding="utf-8")
    code, out = invoke("lines", "import", str(clash))
    assert code == 2 and "belongs to line +14155557101" in out


def test_apikey_create_and_revoke(cli_env: str) -> None:
    code, out = invoke("apikey", "create", "--name", "crm", "--scope", "lines:read")
    assert code == 0 and out.startswith("sck_")
    prefix = out.strip().split("_", 2)[1]
    code, out = invoke("apikey", "create", "--name", "crm", "--scope", "everything")
    assert code == 2 and "Unknown scope(s): everything" in out
    assert invoke("apikey", "revoke", prefix)[0] == 0
    code, out = invoke("apikey", "revoke", prefix)
    assert code == 1 and "no live key" in out
    # who made and who revoked the key is in the audit log, the revocation with the key's state
    # before and after (as the back office records it); the refusals left nothing there
    async def entries() -> list[tuple[str, str | None, str, Any, Any]]:
        from simcharge.backoffice.models import AuditEntry

        db = Database.from_url(cli_env)
        try:
            async with db.read() as s:
                rows = (await s.execute(select(AuditEntry).order_by(AuditEntry.at))).scalars()
                return [(e.action, e.target_id, e.actor, e.before, e.after) for e in rows]
        finally:
            await db.dispose()

    actor = f"cli:{getpass.getuser()}"
    created, revoked = asyncio.run(entries())
    assert created == (
        "apikey.create", prefix, actor, None, {"name": "crm", "scopes": ["lines:read"]}
    )
    assert revoked[:4] == (
        "apikey.revoke", prefix, actor, {"state": "live", "expires_at": None}
    )
    assert revoked[4]["state"] == "revoked" and revoked[4]["revoked_at"]


def _start(tmp_path: Path, command: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """Run the installed `simcharge COMMAND` with exactly these settings (none from the
    developer's environment, no .env: the working directory is empty)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIMCHARGE_")}
    env.update({f"SIMCHARGE_{k.upper()}": v for k, v in settings.items()})
    script = Path(sys.executable).with_name("simcharge")
    return subprocess.run(
        [str(script), *command.split()], env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=120, check=False,
    )


@pytest.mark.parametrize("key", ["", "short-but-not-default"])
@pytest.mark.parametrize("command", ["serve", "worker --drain"])
def test_a_refused_production_start_says_why_in_one_line(
    tmp_path: Path, key: str, command: str
) -> None:
    settings = {"env": "production", "base_url": "https://top.example"}
    if key:
        settings["secret_key"] = key
    done = _start(tmp_path, command, **settings)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "simcharge: cannot start: SIMCHARGE_SECRET_KEY must be set to a random value of at "
        "least 32 characters in production"
    ]
    assert key == "" or key not in done.stderr


def test_every_invalid_setting_is_named_one_line_each(tmp_path: Path) -> None:
    done = _start(tmp_path, "db current", env="staging", db_pool_size="0")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "simcharge: cannot start: SIMCHARGE_ENV: Input should be 'development', 'test' or "
        "'production'",
        "simcharge: cannot start: SIMCHARGE_DB_POOL_SIZE: Input should be greater than or "
        "equal to 1",
    ]

"""Sixteenth round (a new operator following the README): commands run in a process of their
own, as an operator runs them — not after the test session imported every model. `lines import`
stopped with `NoReferencedTableError` (`lines.account_id` names `accounts`, whose model the
command never imported); a database that refuses connections printed only
`ConnectionRefusedError: [Errno 111] …`, naming neither the database nor the setting."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

SIMCHARGE = str(Path(sys.executable).with_name("simcharge"))


def _env(tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIMCHARGE_")}
    env.update({
        "SIMCHARGE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'x.db'}",
        "SIMCHARGE_ENV": "development",
        **settings,
    })
    return env


def _simcharge(tmp_path: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SIMCHARGE, *args], env=_env(tmp_path, **settings), cwd=tmp_path, capture_output=True,
        text=True, timeout=120, check=False,
    )


def test_lines_import_in_a_process_of_its_own(tmp_path: Path) -> None:
    assert _simcharge(tmp_path, "db", "upgrade").returncode == 0
    sims = tmp_path / "sims.csv"
    sims.write_text(
        "msisdn,iccid,activation_code\n"
        "+14155550190,8901260000000000196,LPA:1$smdp.example.com$AC-190\n",
        encoding="utf-8",
    )
    done = _simcharge(tmp_path, "lines", "import", str(sims), "--currency", "USD")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout.strip() == "1 line(s) imported, 0 already present"
    again = _simcharge(tmp_path, "lines", "import", str(sims), "--currency", "USD")
    assert again.stdout.strip() == "0 line(s) imported, 1 already present", again.stderr


def test_a_database_that_refuses_says_which_setting(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        done = _simcharge(
            tmp_path, "db", "current",
            SIMCHARGE_DATABASE_URL=f"postgresql+asyncpg://nobody:secret-pw@127.0.0.1:{port}/x",
        )
    assert done.returncode == 1, done
    lines = [line for line in done.stderr.splitlines() if not line.startswith("{")]
    assert lines == [
        "simcharge: cannot reach the database (SIMCHARGE_DATABASE_URL): Connection refused"
    ], done.stderr
    assert "secret-pw" not in done.stderr + done.stdout

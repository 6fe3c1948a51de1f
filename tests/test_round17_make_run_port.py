"""Round 17 (H6): `make run` served on 8000 and printed http://127.0.0.1:8000 with `PORT=9000`
in `.env`: only the environment's PORT counted (the Makefile passed `--port 8000`, which beat
the `.env` that `simcharge serve` reads). Now the Makefile reads `.env` as the server does:
the command line or the environment, else `.env`, else 8000 — for the port it passes and the
base URL the demo prints. Each case runs make on a copy of the Makefile, printing only."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

MAKEFILE = Path(__file__).resolve().parents[1] / "Makefile"
SHOW = 'show: ; @echo "$(PORT) $$SIMCHARGE_BASE_URL"'

MAKE = shutil.which("make")

pytestmark = pytest.mark.skipif(MAKE is None, reason="make is not installed")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A directory with the Makefile and what its rules name, everything already installed."""
    shutil.copy(MAKEFILE, tmp_path / "Makefile")
    for name in ("pyproject.toml", "package.json", "package-lock.json"):
        (tmp_path / name).touch()
    for stamp in (".venv/.installed", "node_modules/.installed"):
        (tmp_path / stamp).parent.mkdir()
        (tmp_path / stamp).touch()
        os.utime(tmp_path / stamp, (2_000_000_000, 2_000_000_000))  # newer than its inputs
    return tmp_path


def _make(project: Path, *args: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("PORT", "SIMCHARGE_BASE_URL", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    done = subprocess.run(
        [str(MAKE), "-s", "--no-print-directory", *args], cwd=project, env=clean | env,
        capture_output=True, text=True, timeout=30, check=True,
    )
    return done.stdout.strip()


def _shown(project: Path, *args: str, **env: str) -> str:
    return _make(project, "--eval", SHOW, "show", *args, **env)


@pytest.mark.parametrize(
    ("dotenv", "port"),
    [
        (None, "8000"),
        ("PORT=9123\n", "9123"),
        ('export PORT = "9124"  # the dev port\nSIMCHARGE_LOG_JSON=false\n', "9124"),
        ("PORT='9125'\nPORT=9126 # the last one counts\n", "9126"),
        ("PORT=9127\r\n", "9127"),
        ("PORT=\n", "8000"),  # empty: not set
        ("# PORT=1\nMY_PORT=2\nSIMCHARGE_SMTP_PORT=25\n", "8000"),
        # not a port number: never written into the command line (it would run there)
        ("PORT=8000;touch pwned\n", "8000"),
        ("PORT=$(touch pwned)\n", "8000"),
        ("PORT=`touch pwned`\n", "8000"),
        ("PORT=8000' ; touch pwned ; '\n", "8000"),
        ("PORT=123456\n", "8000"),
    ],
)
def test_the_port_comes_from_dotenv_when_the_environment_has_none(
    project: Path, dotenv: str | None, port: str
) -> None:
    if dotenv is not None:
        (project / ".env").write_text(dotenv, encoding="utf-8", newline="")
    assert _shown(project) == f"{port} http://127.0.0.1:{port}"
    assert not (project / "pwned").exists()


def test_the_environment_and_the_command_line_come_first(project: Path) -> None:
    (project / ".env").write_text("PORT=9123\n", encoding="utf-8")
    assert _shown(project, PORT="7000") == "7000 http://127.0.0.1:7000"
    assert _shown(project, "PORT=7001", PORT="7000") == "7001 http://127.0.0.1:7001"


def test_a_base_url_in_dotenv_is_kept(project: Path) -> None:
    (project / ".env").write_text(
        "PORT=9127\nSIMCHARGE_BASE_URL=http://localhost:9127/\n", encoding="utf-8"
    )
    assert _shown(project) == "9127 http://localhost:9127/"
    assert _shown(project, SIMCHARGE_BASE_URL="http://env.example") == "9127 http://env.example"


def test_make_run_serves_the_port_it_says(project: Path) -> None:
    (project / ".env").write_text("PORT=9128\n", encoding="utf-8")
    planned = _make(project, "-n", "run").splitlines()
    assert planned[-1].endswith("PORT=9128 .venv/bin/simcharge serve --port 9128"), planned

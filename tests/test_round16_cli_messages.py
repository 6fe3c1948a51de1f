"""Commands that say what to do: a role checked before the password, `demo` refused in
production with what to run instead, `secrets reseal` naming the keys no code is under, `PORT`
read from `.env`, `serve` saying once it listens."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs
from typer.testing import CliRunner

from simcharge import cli
from simcharge.cli import app
from simcharge.config import get_settings

runner = CliRunner()


def test_an_unknown_role_is_refused_before_the_password_is_asked(cli_env: str) -> None:
    result = runner.invoke(app, ["staff", "create", "boss1", "--role", "boss"], input="")
    assert result.exit_code == 2
    assert "role: unknown role 'boss'; use agent, finance, admin" in result.output
    assert "Password" not in result.output
    code = runner.invoke(app, ["staff", "passkeys", "list", "boss1"]).exit_code
    assert code == 1  # not created


def test_demo_in_production_says_how_to_load_the_catalog(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SIMCHARGE_ENV", "production")
    monkeypatch.setenv("SIMCHARGE_SECRET_KEY", "x" * 40)
    monkeypatch.setenv("SIMCHARGE_BASE_URL", "https://charge.example.com")
    get_settings.cache_clear()
    try:
        result = runner.invoke(app, ["demo"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert "refused in production" in result.output
    assert "simcharge catalog load FILE" in result.output


def test_reseal_says_when_no_codes_are_under_a_previous_key(
    cli_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from simcharge.kit.crypto import key_id

    with capture_logs():  # not printed to a stream an earlier test's capture may have closed
        result = runner.invoke(app, ["secrets", "reseal", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "recovery codes: none under a previous key (no previous key)" in result.output

    old = "o" * 40
    monkeypatch.setenv("SIMCHARGE_SECRET_KEY", "n" * 40)
    monkeypatch.setenv("SIMCHARGE_SECRET_KEY_PREVIOUS", old)
    get_settings.cache_clear()
    with capture_logs():
        result = runner.invoke(app, ["secrets", "reseal"])
    get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert f"recovery codes: none under key {key_id(old)} (previous #1)" in result.output


def _env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    (tmp_path / ".env").write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PORT", raising=False)
    monkeypatch.delenv("SIMCHARGE_WORKER_METRICS_PORT", raising=False)


def test_port_comes_from_the_environment_then_env_file_then_8000(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _env_file(tmp_path, monkeypatch, "# a comment\nPORT=8211\nSIMCHARGE_WORKER_METRICS_PORT= 9111\n")
    assert cli._port_from_env_file("PORT", 8000) == 8211
    assert cli._port_from_env_file("SIMCHARGE_WORKER_METRICS_PORT", None) == 9111
    _env_file(tmp_path, monkeypatch, "PORT=\n")
    assert cli._port_from_env_file("PORT", 8000) == 8000
    assert cli._port_from_env_file("SIMCHARGE_WORKER_METRICS_PORT", None) is None


@pytest.mark.parametrize("value", ["0", "65536", "eighty", "80.5", "-1"])
def test_a_port_in_env_file_that_is_none_stops_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    _env_file(tmp_path, monkeypatch, f"PORT={value}\n")
    get_settings.cache_clear()
    try:
        result = runner.invoke(app, ["serve"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert "PORT in .env is not a port (1-65535)" in result.output


def test_serve_takes_port_from_env_file_and_says_once_it_listens(
    cli_env: str, tmp_path: Path
) -> None:
    """The real server, one process then two, on the port `.env` names (not in the process's
    environment): one `server.listening` line once its port takes connections."""
    import json
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    simcharge = str(Path(sys.executable).with_name("simcharge"))
    for workers in (1, 2):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            free = probe.getsockname()[1]
        (tmp_path / ".env").write_text(
            f"PORT={free}\nSIMCHARGE_LOG_JSON=true\nSIMCHARGE_WORKER_IN_PROCESS=false\n",
            encoding="utf-8",
        )
        env = {k: v for k, v in os.environ.items() if k != "PORT"}
        env.update(SIMCHARGE_DATABASE_URL=cli_env, SIMCHARGE_ENV="test")
        proc = subprocess.Popen(
            [simcharge, "serve", "--workers", str(workers), "--graceful-seconds", "2"],
            cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True,
        )
        try:
            assert proc.stderr is not None
            said: list[dict[str, object]] = []
            deadline = time.monotonic() + 120
            while not said and time.monotonic() < deadline:
                line = proc.stderr.readline()
                assert line, "serve stopped"
                if '"server.listening"' in line:
                    said.append(json.loads(line))
            assert [(e["host"], e["port"], e["workers"]) for e in said] == [
                ("127.0.0.1", free, workers)
            ]
            with urllib.request.urlopen(f"http://127.0.0.1:{free}/healthz", timeout=10) as r:
                assert r.status == 200
        finally:
            proc.send_signal(signal.SIGTERM)
            rest = proc.communicate(timeout=60)[1]
        assert '"server.listening"' not in rest  # once

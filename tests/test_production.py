"""Production mode: `simcharge serve --workers N` as a real process tree, its JSON log lines
(request ids in, secrets out), and the deployment files."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SIMCHARGE = str(Path(sys.executable).with_name("simcharge"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_until_up(url: str, proc: subprocess.Popen[bytes], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("the server did not come up")


def test_serve_with_two_workers_writes_json_logs_with_request_ids_and_no_secrets(
    tmp_path: Path,
) -> None:
    env = {
        **os.environ,
        "SIMCHARGE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'prod.db'}",
        "SIMCHARGE_ENV": "development",
        "SIMCHARGE_LOG_JSON": "true",
        "SIMCHARGE_LOG_LEVEL": "INFO",
        "SIMCHARGE_WORKER_IN_PROCESS": "false",
        "SIMCHARGE_AUTH_MIN_RESPONSE_MS": "0",
    }
    subprocess.run([SIMCHARGE, "db", "upgrade"], env=env, check=True, capture_output=True)
    port = _free_port()
    log_file = tmp_path / "server.log"
    with log_file.open("wb") as out:
        proc = subprocess.Popen(
            [SIMCHARGE, "serve", "--workers", "2", "--port", str(port), "--graceful-seconds", "5"],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_until_up(f"{base}/healthz", proc)
            password = "Hunter2-very-secret-password"
            token = "sck_live_ThisIsASecretApiKeyValue0123456789"
            r = httpx.post(
                f"{base}/api/v1/auth/login",
                json={"login": "nobody@example.com", "password": password},
                headers={"X-Request-Id": "req-login-0001", "Authorization": f"Bearer {token}"},
            )
            assert r.status_code in (400, 401), r.text
            assert r.headers["x-request-id"] == "req-login-0001"
            r = httpx.get(f"{base}/api/v1/admin/jobs", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 401
            generated = r.headers["x-request-id"]
            metrics = httpx.get(f"{base}/metrics")
            assert "simcharge_outbox_jobs" in metrics.text
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
    lines = [line for line in log_file.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is a JSON object
    requests = [r for r in records if r.get("event") == "http.request"]
    by_id = {r["request_id"]: r for r in requests}
    assert by_id["req-login-0001"]["route"] == "/api/v1/auth/login"
    assert by_id[generated]["status"] == 401
    assert all({"timestamp", "level"} <= r.keys() for r in records)
    text = log_file.read_text()
    assert password not in text and token not in text
    assert "sck_live" not in text


def _env_file(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            found[name.strip()] = value.strip()
    return found


NOT_SIMCHARGE = {"POSTGRES_PASSWORD", "FORWARDED_ALLOW_IPS", "PROMETHEUS_MULTIPROC_DIR"}


def _setting_names() -> set[str]:
    from simcharge.config import Settings

    return {f"SIMCHARGE_{name.upper()}" for name in Settings.model_fields}


def test_compose_runs_postgres_redis_web_and_worker_with_real_settings() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "web", "worker"}
    web, worker = services["web"], services["worker"]
    assert web["build"] == "." and worker["image"] == web["image"]
    assert "simcharge db upgrade" in " ".join(web["command"])  # migrations on start
    assert "serve" in " ".join(web["command"]) and worker["command"][:2] == ["simcharge", "worker"]
    assert web["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert worker["depends_on"]["web"]["condition"] == "service_healthy"
    names = _setting_names()
    for service in (web, worker):
        assert service["env_file"] == "deploy/production.env"
        env = service["environment"]
        assert env["SIMCHARGE_DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert env["SIMCHARGE_REDIS_URL"].startswith("redis://redis:")
        assert set(env) - NOT_SIMCHARGE <= names, set(env) - names
    assert "pgdata" in compose["volumes"]


def test_the_production_env_example_names_real_settings_and_loads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from simcharge.config import Environment, Settings

    example = _env_file(ROOT / "deploy" / "production.env.example")
    unknown = set(example) - NOT_SIMCHARGE - _setting_names()
    assert not unknown, f"not settings: {sorted(unknown)}"
    for name, value in example.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SIMCHARGE_SECRET_KEY", "x" * 48)
    for name in ("SIMCHARGE_TWILIO_ACCOUNT_SID", "SIMCHARGE_TWILIO_AUTH_TOKEN"):
        monkeypatch.setenv(name, "filled-in")
    monkeypatch.setenv("SIMCHARGE_TWILIO_FROM", "+15005550006")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.env is Environment.production and settings.log_json
    assert settings.stripe_secret_key is None  # empty: not set, so Stripe is not offered
    assert settings.alipay_private_key_file is None


def test_the_dockerfile_is_multi_stage_and_runs_unprivileged() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = [line for line in text.splitlines() if line.startswith("FROM ")]
    assert len(stages) == 2 and " AS build" in stages[0]
    assert "COPY --from=build /opt/simcharge /opt/simcharge" in text
    user = [line for line in text.splitlines() if line.startswith("USER ")]
    assert user and user[-1].split()[1].split(":")[0] not in ("root", "0")
    final = text.rsplit(stages[1], 1)[1]
    assert "pip install" not in final and "curl" not in final and "wget" not in final


def test_library_log_records_are_json_lines_too(capfd: pytest.CaptureFixture[str]) -> None:
    import logging

    from simcharge.kit.logging import configure_logging

    # As uvicorn's own logging config leaves it (or a server started by an earlier test).
    uvicorn_error = logging.getLogger("uvicorn.error")
    uvicorn_error.propagate = False
    uvicorn_error.addHandler(logging.NullHandler())
    try:
        configure_logging("INFO", json=True)
        logging.getLogger("uvicorn.error").warning("worker %s died", 7)
        logging.getLogger("httpx").info("HTTP Request: GET https://api.example/?token=abc")
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("somelib").exception("it failed")
        lines = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
        records = [json.loads(line) for line in lines]
        assert records[0]["event"] == "worker 7 died" and records[0]["level"] == "warning"
        assert "timestamp" in records[0]
        assert len(records) == 2  # the library's INFO line is not written
        assert records[1]["level"] == "error" and "ValueError: boom" in records[1]["exception"]
    finally:
        configure_logging("INFO", json=False)

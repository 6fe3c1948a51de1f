"""Production mode: `simcharge serve --workers N` as a real process tree, its JSON log lines
(request ids in, secrets out), and the deployment files."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import text

from tests.conftest import RUN_TAG, Backend, _pg_create, _pg_drop, _pg_url

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


def _metric(body: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in body.splitlines():
        if line.startswith(name + "{"):
            have = dict(re.findall(r'(\w+)="([^"]*)"', line.split("{", 1)[1].rsplit("}", 1)[0]))
            if have == labels:
                total += float(line.rsplit(" ", 1)[1])
    return total


def test_serve_with_two_workers_adds_up_their_metrics_and_finishes_requests_on_sigterm(
    tmp_path: Path,
) -> None:
    # Missing, as /tmp/metrics is in a fresh container (compose.yaml): made before any metric
    # is, not a FileNotFoundError. (Emptied at start when it exists: test_round15_ops_metrics.)
    metrics_dir = tmp_path / "missing" / "metrics"
    env = {
        **os.environ,
        "SIMCHARGE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'prod.db'}",
        "SIMCHARGE_ENV": "development",
        "SIMCHARGE_WORKER_IN_PROCESS": "false",
        "SIMCHARGE_AUTH_MIN_RESPONSE_MS": "3000",
        "SIMCHARGE_LOG_LEVEL": "WARNING",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    subprocess.run([SIMCHARGE, "db", "upgrade"], env=env, check=True, capture_output=True)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [SIMCHARGE, "serve", "--workers", "2", "--port", str(port), "--graceful-seconds", "20"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        _wait_until_up(f"{base}/readyz", proc)
        assert metrics_dir.is_dir() and metrics_dir.stat().st_mode & 0o077 == 0
        for _ in range(30):  # a new connection each: the two processes share them
            assert httpx.get(f"{base}/healthz").status_code == 200
        pids = {f.stem.rsplit("_", 1)[-1] for f in metrics_dir.glob("*.db")}
        assert len(pids) >= 2, pids  # both processes count into the shared directory
        body = httpx.get(f"{base}/metrics").text
        # Whichever process answered the scrape, it counts every process's requests.
        assert _metric(body, "simcharge_http_requests_total",
                       method="GET", route="/healthz", status="200") == 30

        # A request in flight when the server is told to stop still gets its answer.
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(
                httpx.post, f"{base}/api/v1/auth/password/forgot",
                json={"login": "nobody@example.com", "channel": "email"}, timeout=30,
            )
            time.sleep(1.0)
            proc.send_signal(signal.SIGTERM)
            answer = slow.result(timeout=30)
        assert answer.status_code == 202, answer.text
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    output = (tmp_path / "server.log").read_text()
    assert "Warning" not in output and "Traceback" not in output, output


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


def test_compose_migrates_once_then_runs_web_and_worker_with_real_settings() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "migrate", "web", "worker"}
    migrate, web, worker = services["migrate"], services["web"], services["worker"]
    # One image, built once, run three ways.
    assert migrate["build"] == "." and web["image"] == worker["image"] == migrate["image"]
    assert migrate["command"] == ["simcharge", "db", "upgrade"] and migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    for service in (web, worker):  # only once the migrations succeeded, and never themselves
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert "upgrade" not in " ".join(service["command"])
    assert web["command"][:2] == ["simcharge", "serve"] and "--workers" in web["command"]
    assert web["environment"]["PROMETHEUS_MULTIPROC_DIR"]
    assert worker["command"][:2] == ["simcharge", "worker"]
    port = worker["command"][worker["command"].index("--metrics-port") + 1]
    assert f"127.0.0.1:{port}/metrics" in " ".join(worker["healthcheck"]["test"])
    names = _setting_names()
    for service in (migrate, web, worker):
        assert service["env_file"] == "deploy/production.env"
        env = service["environment"]
        assert env["SIMCHARGE_DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert env["SIMCHARGE_REDIS_URL"].startswith("redis://redis:")
        assert env["SIMCHARGE_WORKER_IN_PROCESS"] == "false"
        assert set(env) - NOT_SIMCHARGE <= names, set(env) - names
    assert "pgdata" in compose["volumes"]


def test_several_web_processes_get_a_shared_metrics_directory_even_unasked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The image's default command runs `serve --workers 2` with no PROMETHEUS_MULTIPROC_DIR."""
    from simcharge.metrics import MULTIPROC_ENV, prepare_multiprocess

    # Set first, so that the teardown takes away what prepare_multiprocess sets (a directory
    # removed below would break every later process that imports prometheus_client).
    monkeypatch.setenv(MULTIPROC_ENV, "")
    monkeypatch.delenv(MULTIPROC_ENV)
    assert prepare_multiprocess(1) is None and MULTIPROC_ENV not in os.environ
    made = prepare_multiprocess(2)
    try:
        assert made is not None and made.is_dir() and not any(made.iterdir())
        assert os.environ[MULTIPROC_ENV] == str(made)  # inherited by the processes uvicorn starts
    finally:
        if made is not None:
            made.rmdir()
    text = (ROOT / "Dockerfile").read_text()
    cmd = next(line for line in text.splitlines() if line.startswith("CMD "))
    assert '"serve"' in cmd and '"--workers", "2"' in cmd


@pytest.mark.parametrize("command", [["serve"], ["worker", "--drain"]])
@pytest.mark.parametrize(
    ("database_url", "warned"),
    [("sqlite+aiosqlite:///var/tiny.db", True), ("postgresql+asyncpg://db/simcharge", False)],
)
def test_serve_and_worker_warn_of_sqlite_in_production(
    command: list[str], database_url: str, warned: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Allowed (one small process may want it), but said at every start."""
    import uvicorn
    from structlog.testing import capture_logs
    from typer.testing import CliRunner

    from simcharge import cli
    from simcharge.config import Settings, get_settings
    from simcharge.kit import logging as kit_logging
    from simcharge.metrics import MULTIPROC_ENV

    for name in Settings.model_fields:
        monkeypatch.delenv(f"SIMCHARGE_{name.upper()}", raising=False)
    monkeypatch.setenv("SIMCHARGE_ENV", "production")
    monkeypatch.setenv("SIMCHARGE_SECRET_KEY", "x" * 48)
    monkeypatch.setenv("SIMCHARGE_BASE_URL", "https://top.example")
    # A site with its privacy notice: its absence is another warning (tests/accounts/
    # test_round16_privacy.py), not this test's.
    monkeypatch.setenv("SIMCHARGE_PRIVACY_NOTICE_URL", "/privacy")
    monkeypatch.setenv("SIMCHARGE_DATABASE_URL", database_url)
    monkeypatch.setenv(MULTIPROC_ENV, "")
    monkeypatch.delenv(MULTIPROC_ENV)
    # Only the start is under test: no logging set up for good, no server, no database.
    monkeypatch.setattr(kit_logging, "configure_logging", lambda *a, **kw: None)
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: None)
    monkeypatch.setattr(cli, "_run", lambda fn: None)
    get_settings.cache_clear()
    try:
        with capture_logs() as logs:
            result = CliRunner().invoke(cli.app, command)
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    events = [e["event"] for e in logs if e["log_level"] == "warning"]
    assert events == (["config.sqlite_in_production"] if warned else [])


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


def test_the_production_env_example_names_every_setting() -> None:
    """Set, or commented out with its default: an operator sees every knob in one file."""
    text = (ROOT / "deploy" / "production.env.example").read_text()
    named = set(re.findall(r"^#? ?(SIMCHARGE_[A-Z0-9_]+)=", text, flags=re.MULTILINE))
    assert _setting_names() - named == set()


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


@pytest.mark.postgres_only
async def test_two_upgrades_started_at_once_migrate_one_after_the_other(backend: Backend) -> None:
    """As two containers of a new release starting together: both succeed, the schema once."""
    from sqlalchemy import inspect

    from simcharge import migrate
    from simcharge.db import create_engine

    name = f"simcharge_migrate_{uuid.uuid4().hex[:8]}_{RUN_TAG}"
    await _pg_create(name)
    url = _pg_url(name)
    try:
        env = {**os.environ, "SIMCHARGE_DATABASE_URL": url, "SIMCHARGE_ENV": "development"}
        procs = [
            await asyncio.create_subprocess_exec(
                SIMCHARGE, "db", "upgrade", env=env, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            for _ in range(2)
        ]
        done = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), 120)
        outputs = [out.decode() for out, _ in done]
        assert [p.returncode for p in procs] == [0, 0], outputs
        head = migrate.head_revision()
        assert all(f"database at revision {head}" in out for out in outputs), outputs
        engine = create_engine(url, null_pool=True)
        try:
            assert await migrate.current_revision(engine) == head
            async with engine.connect() as conn:
                tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
                versions = (await conn.execute(text("SELECT * FROM alembic_version"))).all()
                # The lock is released: nobody holds it once both are done.
                held = await conn.execute(
                    text(
                        "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND database ="
                        " (SELECT oid FROM pg_database WHERE datname = current_database())"
                    )
                )
                assert held.scalar_one() == 0
        finally:
            await engine.dispose()
        assert "outbox_jobs" in tables and len(versions) == 1
    finally:
        await _pg_drop(name)

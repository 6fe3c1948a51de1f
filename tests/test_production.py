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

ROOT = Path(__file__).resolve().parent.parent
SIMCHARGE = str(Path(sys.executable).with_name("simcharge"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_until_up(url: str, proc: subprocess.Popen[bytes], seconds: float = 30) -> None:
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

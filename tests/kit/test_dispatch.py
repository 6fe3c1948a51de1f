"""simcharge.kit.dispatch as a real process tree: a parent accepting on one port and handing
each connection to the web process with the fewest open ones (tests/kit/dispatch_app.py
answers with its process id)."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.kit.dispatch_app:app"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(port: int, env: dict[str, str] | None = None, processes: int = 2) -> subprocess.Popen[bytes]:
    script = (
        "import sys; from simcharge.kit.dispatch import serve; "
        f"sys.exit(serve({APP!r}, host='127.0.0.1', port={port}, processes={processes}, "
        "timeout_graceful_shutdown=10, log_level='warning'))"
    )
    return subprocess.Popen([sys.executable, "-c", script], cwd=ROOT,
                            env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _connect(port: int, proc: subprocess.Popen[bytes]) -> http.client.HTTPConnection:
    """A kept-alive connection, opened as soon as the port takes one."""
    deadline = time.monotonic() + 60
    while True:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            conn.connect()
            return conn
        except ConnectionRefusedError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _pid(conn: http.client.HTTPConnection, path: str = "/") -> int:
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read().decode()
    assert response.status == 200, body
    return int(body.split()[0])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def port() -> int:
    return _free_port()


def test_connections_opened_at_once_are_spread_evenly_even_when_one_process_starts_late(
    port: int, tmp_path: Path
) -> None:
    # One of the two processes takes 3 s to start; the connections are opened before that.
    proc = _start(port, {"DISPATCH_TEST_SLOW_FIRST": str(tmp_path / "slow")})
    try:
        conns = [_connect(port, proc) for _ in range(8)]
        with ThreadPoolExecutor(8) as pool:
            pids = list(pool.map(_pid, conns))
        spread = Counter(pids)
        assert sorted(spread.values()) == [4, 4], spread
        # Kept alive: each connection stays with its process.
        assert [_pid(c) for c in conns] == pids
        for c in conns:
            c.close()
    finally:
        _stop(proc)
    assert proc.returncode == 0, proc.stdout.read() if proc.stdout else ""


def test_a_new_connection_goes_to_the_process_with_the_fewest_open(port: int) -> None:
    proc = _start(port)
    try:
        conns = [_connect(port, proc) for _ in range(6)]
        pids = [_pid(c) for c in conns]
        assert sorted(Counter(pids).values()) == [3, 3]
        first = pids[0]
        for c, pid in zip(conns, pids, strict=True):
            if pid == first:
                c.close()
        time.sleep(1.0)  # the process reports each close to the parent
        fresh = [_connect(port, proc) for _ in range(3)]
        assert [_pid(c) for c in fresh] == [first] * 3
        for c in conns + fresh:
            c.close()
    finally:
        _stop(proc)
    assert proc.returncode == 0


def test_a_process_that_dies_is_replaced_and_the_others_keep_serving(port: int) -> None:
    proc = _start(port)
    try:
        conns = [_connect(port, proc) for _ in range(2)]
        pids = [_pid(c) for c in conns]
        assert len(set(pids)) == 2
        killed, kept = pids
        os.kill(killed, signal.SIGKILL)
        with pytest.raises((http.client.HTTPException, OSError)):
            _pid(conns[0])  # its connections went with it
        assert _pid(conns[1]) == kept
        deadline = time.monotonic() + 60
        seen: set[int] = set()
        while time.monotonic() < deadline:
            c = _connect(port, proc)
            seen.add(_pid(c))
            c.close()
            if seen - {kept}:
                break
            time.sleep(0.2)
        (replacement,) = seen - {kept}
        assert replacement != killed and not _alive(killed)
        assert proc.poll() is None
    finally:
        _stop(proc)
    assert proc.returncode == 0


def test_sigterm_lets_a_request_in_flight_finish_then_every_process_exits(port: int) -> None:
    proc = _start(port)
    try:
        conns = [_connect(port, proc) for _ in range(2)]
        children = {_pid(c) for c in conns}
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(_pid, conns[0], "/slow")
            time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            assert slow.result(timeout=30) in children
        assert proc.wait(timeout=30) == 0
        # No new connection is taken once stopping.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in children)
    finally:
        _stop(proc)


def test_an_application_that_cannot_start_stops_the_server_with_status_3(port: int) -> None:
    proc = _start(port, {"DISPATCH_TEST_FAIL_START": "1"})
    try:
        assert proc.wait(timeout=60) == 3
    finally:
        _stop(proc)
    output = proc.stdout.read().decode() if proc.stdout else ""
    assert "exited while starting" in output, output

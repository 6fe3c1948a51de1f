"""The processes under test: web servers and workers of simcharge on one PostgreSQL database,
started, killed with SIGKILL and restarted; and PostgreSQL itself, restarted at once."""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GRACE_SECONDS = 10
"""What the processes are given to stop (a worker's jobs in hand, a web process's requests)."""
STOP_SECONDS = GRACE_SECONDS + 20


@dataclass
class Proc:
    name: str
    argv: list[str]
    log: Path
    port: int | None = None
    process: asyncio.subprocess.Process | None = None
    kills: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Cluster:
    env: dict[str, str]
    logs: Path
    web_ports: list[int]
    workers: int
    procs: list[Proc] = field(default_factory=list)
    supervisor_restarts: list[str] = field(default_factory=list)
    forced: list[str] = field(default_factory=list)
    """Processes that did not stop within `STOP_SECONDS` of SIGTERM and were killed."""

    def __post_init__(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        simcharge = str(BIN / "simcharge")
        for i, port in enumerate(self.web_ports):
            self.procs.append(
                Proc(f"web{i + 1}", [simcharge, "serve", "--port", str(port),
                                     "--graceful-seconds", str(GRACE_SECONDS)],
                     self.logs / f"web{i + 1}.log", port=port)
            )
        for i in range(self.workers):
            self.procs.append(
                Proc(f"worker{i + 1}", [simcharge, "worker", "--concurrency", "4"],
                     self.logs / f"worker{i + 1}.log")
            )

    @property
    def web(self) -> list[Proc]:
        return [p for p in self.procs if p.port is not None]

    async def start(self, proc: Proc) -> None:
        log = proc.log.open("ab")
        proc.process = await asyncio.create_subprocess_exec(
            *proc.argv, env={**os.environ, **self.env}, stdout=log, stderr=log, cwd=ROOT
        )
        log.close()

    async def start_all(self) -> None:
        for p in self.procs:
            await self.start(p)
        await self.wait_ready()

    async def wait_ready(self, timeout: float = 240) -> None:
        """Wait until every web process answers its health check; one that does not within a
        minute is restarted, as a supervisor (systemd, Docker, Kubernetes) would."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=5) as http:
            for p in self.web:
                restart_at = time.monotonic() + 60
                while True:
                    try:
                        if (await http.get(f"{p.url}/healthz")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{p.name} did not start; see {p.log}")
                    if time.monotonic() > restart_at:
                        self.supervisor_restarts.append(p.name)
                        await self.restart(p)
                        restart_at = time.monotonic() + 60
                    await asyncio.sleep(0.2)

    async def others_serving(self, proc: Proc) -> bool:
        """Whether every web process but `proc` answers its health check now."""
        async with httpx.AsyncClient(timeout=1) as http:
            for p in self.web:
                if p is proc:
                    continue
                try:
                    if (await http.get(f"{p.url}/healthz")).status_code != 200:
                        return False
                except httpx.HTTPError:
                    return False
        return True

    async def kill(self, proc: Proc) -> None:
        """SIGKILL: no shutdown handler runs, in-flight requests and claimed jobs are cut."""
        if proc.process is not None and proc.process.returncode is None:
            proc.process.send_signal(signal.SIGKILL)
            await proc.process.wait()
            proc.kills += 1

    async def restart(self, proc: Proc) -> None:
        await self.kill(proc)
        await self.start(proc)

    async def stop_all(self) -> None:
        """SIGTERM, as an operator stops them; SIGKILL after `STOP_SECONDS`, recorded in
        `forced` (a graceful shutdown that does not end is a fault)."""
        stopping = [p for p in self.procs if p.process is not None and p.process.returncode is None]
        for p in stopping:
            assert p.process is not None
            p.process.send_signal(signal.SIGTERM)
        for p in stopping:
            assert p.process is not None
            try:
                await asyncio.wait_for(p.process.wait(), STOP_SECONDS)
            except TimeoutError:
                self.forced.append(p.name)
                p.process.kill()
                await p.process.wait()


def postgres_restart_command(port: int, given: str | None = None) -> list[str] | None:
    """The command that restarts PostgreSQL at once: `given` (e.g. `docker restart -t 0 pg`,
    `pg_ctl restart -m immediate -D …`), or `pg_ctlcluster … restart -m immediate` for the local
    Debian cluster listening on `port` (immediate: as after a crash); None where there is none."""
    if given:
        return shlex.split(given)
    if shutil.which("pg_lsclusters") is None:
        return None
    listing = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True)
    for row in listing.stdout.splitlines():
        version, name, cluster_port, *_ = row.split()
        if cluster_port == str(port):
            return ["pg_ctlcluster", "--skip-systemctl-redirect", version, name, "restart",
                    "-m", "immediate"]
    return None


@dataclass
class WebhookSink:
    """Where the webhooks of a payment chosen to lose them go: an HTTP server that answers
    `200` and keeps nothing, so that the provider believes them delivered and never sends them
    again. Only the payer's return, "check now" and reconciliation can credit such an order."""

    received: int = 0
    server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/lost-webhooks"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._answer, "127.0.0.1", 0)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.decode("latin-1").split("\r\n"):
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip())
                await reader.readexactly(length)
                self.received += 1
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: 17\r\n\r\n{\"received\":true}"
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError,
                ValueError):
            pass
        finally:
            writer.close()

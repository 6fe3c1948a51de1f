"""The processes under test: web servers and workers of simcharge on one PostgreSQL database,
started, killed with SIGKILL and restarted; PostgreSQL itself, restarted at once; and the
cluster's own Redis, stopped for a while and started again."""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import signal
import socket
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
        # simcharge's own command line, with the sandbox failing during provider storms
        # (`chaos.faults`); web processes trust X-Forwarded-For from 127.0.0.1, as behind a
        # load balancer, so that each customer is its own client address.
        simcharge = [sys.executable, "-m", "chaos.faults"]
        for i, port in enumerate(self.web_ports):
            self.procs.append(
                Proc(f"web{i + 1}", [*simcharge, "serve", "--port", str(port),
                                     "--graceful-seconds", str(GRACE_SECONDS),
                                     "--proxy-headers"],
                     self.logs / f"web{i + 1}.log", port=port)
            )
        for i in range(self.workers):
            self.procs.append(
                Proc(f"worker{i + 1}", [*simcharge, "worker", "--concurrency", "4"],
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


SHARED_REDIS_PORT = 6379
"""The machine's own Redis, which a run never uses, stops or flushes."""


def free_port() -> int:
    """A TCP port nothing listens on now (on 127.0.0.1), never the shared Redis's."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port != SHARED_REDIS_PORT:
            return port


@dataclass
class RedisServer:
    """The cluster's own `redis-server`, on a free port of 127.0.0.1, keeping nothing on disk:
    started before the cluster, stopped with SIGKILL (as a crash) for an outage and started
    again on the same port, stopped at the end. Every outage is kept as (gone, starting again)
    in `time.monotonic()`."""

    logs: Path
    port: int = 0
    process: asyncio.subprocess.Process | None = None
    outages: list[tuple[float, float]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self, timeout: float = 20) -> None:
        if not self.port:
            self.port = free_port()
        if self.port == SHARED_REDIS_PORT:
            raise RuntimeError("the chaos run never uses the shared Redis on 6379")
        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError("no redis-server on PATH: the Redis outage needs one")
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / "redis.log").open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.logs),
                stdout=out, stderr=out, stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while not await self.answers():
            if self.process.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on {self.port}: see {self.logs}")
            await asyncio.sleep(0.1)

    async def answers(self) -> bool:
        """Whether it answers a PING now."""
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.port), 1
            )
        except (OSError, TimeoutError):
            return False
        try:
            writer.write(b"PING\r\n")
            await writer.drain()
            return await asyncio.wait_for(reader.readline(), 1) == b"+PONG\r\n"
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()

    async def outage(self, seconds: float) -> tuple[float, float]:
        """Stopped now, started again after `seconds`: (gone, starting again) — between the
        two nothing listens on its port. Returns once it answers again."""
        await self.stop()
        gone = time.monotonic()
        await asyncio.sleep(seconds)
        starting = time.monotonic()
        self.outages.append((gone, starting))
        await self.start()
        return gone, starting


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

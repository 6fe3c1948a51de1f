"""Several web processes behind one port: the parent accepts each connection and hands it to
the process with the fewest open connections.

uvicorn's own `--workers` lets every process accept from one shared listening socket, so
whichever process wakes first takes the connection. With kept-alive connections (a proxy's
upstream pool, a load balancer, a browser) the spread is left to timing: in the bench all 32
connections of the user center once went to one process of two, which did all the work while
the other idled, and at best the split was 17/15 by chance. Here the parent process accepts,
and passes the connection's file descriptor over a Unix socket (`SCM_RIGHTS`) to the least
loaded process; each process reports when it is ready and when a connection closes.

- The parent accepts nothing until every process has started (the kernel's backlog holds what
  arrives meanwhile), so that a burst at startup is not all handed to the first one up.
- A process that dies is started again and gets connections once it is ready; its own open
  connections are lost with it, as with uvicorn, but not one sent to it as it died: the parent
  keeps its copy of each connection until the process says it has it, and gives the ones it
  never got to another process. If a process exits during the first start
  (the application cannot start), the server stops with uvicorn's exit status 3; a
  replacement that fails to start is tried again every second while the others serve.
- SIGTERM or SIGINT: the parent stops accepting and tells each process to stop; each finishes
  its requests in flight (`timeout_graceful_shutdown`), runs the application's shutdown and
  exits.

Each process is an ordinary `uvicorn.Server` (same protocol classes, lifespan, signals,
graceful shutdown), whose listening server is replaced by the receiving end of its Unix
socket. Only uvicorn's documented `Config` and the `Server` attributes its own `startup` sets
are used; `tests/kit/test_dispatch.py` runs the real process tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import selectors
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("uvicorn.error")

STARTUP_FAILURE = 3
"""uvicorn's exit status when the application does not start."""
READY, TAKEN, CLOSED, CONNECTION = b"r", b"+", b"-", b"c"
"""Messages on a process's Unix socket: ready, a connection received and one closed (process
to parent), a connection (parent to process, with its descriptor)."""


# --- in each web process ---------------------------------------------------------------------


class _Handoff:
    """Stands where uvicorn keeps its listening servers: receives connections from the parent
    and starts uvicorn's protocol on each; `close()` stops receiving."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        channel: socket.socket,
        create_protocol: Callable[[], asyncio.Protocol],
        parent_gone: Callable[[], None],
        report: Callable[[bytes], None],
    ) -> None:
        self._loop, self._channel = loop, channel
        self._create_protocol, self._parent_gone = create_protocol, parent_gone
        self._report = report
        self._starting: set[asyncio.Task[Any]] = set()
        channel.setblocking(False)
        loop.add_reader(channel.fileno(), self._receive)

    def _receive(self) -> None:
        while True:
            try:
                message, fds, _flags, _address = socket.recv_fds(self._channel, 16, 8)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                message, fds = b"", []
            if not message and not fds:  # the parent is gone: stop as on SIGTERM
                self.close()
                self._parent_gone()
                return
            for fd in fds:
                self._report(TAKEN)  # the parent may now let go of its copy
                connection = socket.socket(fileno=fd)
                task = self._loop.create_task(self._start(connection))
                self._starting.add(task)
                task.add_done_callback(self._starting.discard)

    async def _start(self, connection: socket.socket) -> None:
        connection.setblocking(False)
        try:
            await self._loop.connect_accepted_socket(self._create_protocol, connection)
        except OSError:  # the client left before it was handed over
            connection.close()

    def close(self) -> None:
        if self._channel.fileno() != -1:
            self._loop.remove_reader(self._channel.fileno())

    async def wait_closed(self) -> None:
        return None


def _serve_handed(config_kwargs: dict[str, Any], channel: socket.socket) -> None:
    """A web process's life (the target of `multiprocessing`'s spawn)."""
    import uvicorn

    def report(message: bytes) -> None:
        with contextlib.suppress(OSError):  # the parent is gone: its close tells us
            channel.send(message)

    class HandedServer(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            # As uvicorn's own startup, with the parent's connections for a listening socket.
            await self.lifespan.startup()
            if self.lifespan.should_exit:
                sys.exit(STARTUP_FAILURE)
            config, state = self.config, self.server_state
            base: Any = config.http_protocol_class

            class Counted(base):  # type: ignore[misc]
                def connection_lost(self, exc: Exception | None) -> None:
                    super().connection_lost(exc)
                    report(CLOSED)

            def create_protocol() -> asyncio.Protocol:
                return Counted(config=config, server_state=state, app_state=self.lifespan.state)

            def parent_gone() -> None:
                self.should_exit = True

            loop = asyncio.get_running_loop()
            self.servers = [_Handoff(loop, channel, create_protocol, parent_gone, report)]  # type: ignore[list-item]
            report(READY)
            self.started = True

    HandedServer(uvicorn.Config(**config_kwargs)).run()


# --- in the parent ---------------------------------------------------------------------------


@dataclass(eq=False)
class _Process:
    process: multiprocessing.process.BaseProcess
    channel: socket.socket
    ready: bool = False
    open: int = 0
    order: int = 0
    """When it last got a connection: among equally loaded processes, the longest waiting."""
    handed: deque[socket.socket] = field(default_factory=deque)
    """Connections sent and not yet received, in order: the parent keeps its copy of each until
    the process says it has it, and gives them to another process if this one dies first."""


@dataclass
class Dispatcher:
    """The parent: `run()` until SIGTERM/SIGINT; returns the exit status."""

    config_kwargs: dict[str, Any]
    host: str
    port: int
    processes: int
    backlog: int = 2048
    _listener: socket.socket | None = None
    _selector: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)
    _running: list[_Process] = field(default_factory=list)
    _respawn_at: list[float] = field(default_factory=list)
    _started: bool = False
    """Every process of the first start has been ready (until then nothing is accepted)."""
    _signalled: int | None = None
    _stopping: bool = False
    _deadline: float = 0.0
    _status: int = 0
    _handed: int = 0

    def run(self) -> int:
        self._listener = self._listen()
        wake_read, wake_write = socket.socketpair()
        wake_read.setblocking(False)
        wake_write.setblocking(False)
        previous_wakeup = signal.set_wakeup_fd(wake_write.fileno())
        handlers = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        self._selector.register(wake_read, selectors.EVENT_READ, None)
        host = f"[{self.host}]" if ":" in self.host else self.host
        logger.info("Serving on http://%s:%d with %d processes [%d]", host,
                    self._listener.getsockname()[1], self.processes, os.getpid())
        try:
            for _ in range(self.processes):
                self._spawn()
            while self._running or (self._respawn_at and not self._stopping):
                for key, _events in self._selector.select(timeout=0.5):
                    if key.data is None:
                        with contextlib.suppress(OSError):
                            while wake_read.recv(64):
                                pass
                    elif key.data == "listener":
                        self._accept()
                    else:
                        self._from_process(key.data)
                self._tend()
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(previous_wakeup)
            self._selector.close()
            wake_read.close()
            wake_write.close()
            self._close_listener()
        return self._status

    def _listen(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(self.backlog)
        listener.setblocking(False)
        return listener

    def _spawn(self) -> None:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        process = multiprocessing.get_context("spawn").Process(
            target=_serve_handed, args=(self.config_kwargs, child_end), name="simcharge-web"
        )
        process.start()
        child_end.close()
        parent_end.setblocking(False)
        proc = _Process(process, parent_end)
        self._running.append(proc)
        self._selector.register(parent_end, selectors.EVENT_READ, proc)

    def _on_signal(self, signum: int, _frame: object) -> None:
        # Only noted here; the loop acts on it (the wake-up descriptor ends its wait).
        self._signalled = signum

    def _tend(self) -> None:
        """After each wait: a signal to act on, processes to start again, a shutdown overdue."""
        if self._signalled is not None and not self._stopping:
            logger.info("Stopping (%s)", signal.Signals(self._signalled).name)
            self._stop()
        now = time.monotonic()
        if self._stopping:
            if now > self._deadline:  # past the graceful period
                for proc in self._running:
                    proc.process.kill()
            return
        due = [t for t in self._respawn_at if t <= now]
        self._respawn_at = [t for t in self._respawn_at if t > now]
        for _ in due:
            self._spawn()

    def _stop(self) -> None:
        self._stopping = True
        self._close_listener()
        for proc in self._running:
            if proc.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.process.pid, signal.SIGTERM)
        grace = float(self.config_kwargs.get("timeout_graceful_shutdown") or 30)
        self._deadline = time.monotonic() + grace + 10

    def _close_listener(self) -> None:
        if self._listener is not None:
            if self._listener in {k.fileobj for k in self._selector.get_map().values()}:
                self._selector.unregister(self._listener)
            self._listener.close()
            self._listener = None

    def _from_process(self, proc: _Process) -> None:
        while True:
            try:
                message = proc.channel.recv(64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                message = b""
            if not message:
                self._gone(proc)
                return
            for byte in message:
                if byte == READY[0]:
                    proc.ready = True
                    self._maybe_start_accepting()
                elif byte == TAKEN[0] and proc.handed:
                    proc.handed.popleft().close()
                elif byte == CLOSED[0]:
                    proc.open = max(0, proc.open - 1)

    def _maybe_start_accepting(self) -> None:
        if self._started or self._stopping or not all(p.ready for p in self._running):
            return
        self._started = True
        assert self._listener is not None
        self._selector.register(self._listener, selectors.EVENT_READ, "listener")

    def _gone(self, proc: _Process) -> None:
        self._selector.unregister(proc.channel)
        proc.channel.close()
        self._running.remove(proc)
        while proc.handed:  # sent to it as it died: to another process
            connection = proc.handed.popleft()
            if self._stopping:
                connection.close()
            else:
                self._hand(connection)
        proc.process.join(timeout=5)
        code = proc.process.exitcode
        if self._stopping:
            return
        if not self._started:
            logger.error("A web process exited while starting (status %s): stopping", code)
            self._status = STARTUP_FAILURE
            self._stop()
        elif proc.ready:
            logger.warning("A web process exited (status %s): starting another", code)
            self._respawn_at.append(time.monotonic())
        else:  # a replacement that failed to start: try again shortly, the others serve
            logger.error("A web process exited while starting (status %s): again in 1 s", code)
            self._respawn_at.append(time.monotonic() + 1.0)

    def _accept(self) -> None:
        while self._listener is not None:
            try:
                connection, _address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. out of descriptors: try again on the next wake-up
                logger.error("accept: %s", exc)
                return
            if connection.family in (socket.AF_INET, socket.AF_INET6):
                connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._hand(connection)

    def _hand(self, connection: socket.socket) -> None:
        """To the ready process with the fewest open connections, the longest waiting among
        equals. Our copy is kept until that process has it (`_Process.handed`)."""
        for proc in sorted((p for p in self._running if p.ready), key=lambda p: (p.open, p.order)):
            try:
                socket.send_fds(proc.channel, [CONNECTION], [connection.fileno()])
            except OSError:  # its end is closed: it died, and its wake-up will say so
                continue
            proc.handed.append(connection)
            proc.open += 1
            self._handed += 1
            proc.order = self._handed
            return
        logger.error("No web process could take a connection: closed")
        connection.close()


def serve(
    target: str,
    *,
    host: str,
    port: int,
    processes: int,
    **config_kwargs: Any,
) -> int:
    """Serve `target` (uvicorn's "module:attribute", with its `Config` options) from
    `processes` processes; returns the exit status."""
    return Dispatcher({"app": target, **config_kwargs}, host, port, processes).run()

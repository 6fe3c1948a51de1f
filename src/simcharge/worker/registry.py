"""Which function runs which kind of job, and which jobs recur."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from simcharge.config import Settings
    from simcharge.db import Database
    from simcharge.worker.service import ClaimedJob


@dataclass(frozen=True, slots=True)
class JobContext:
    db: Database
    settings: Settings
    job: ClaimedJob
    http: httpx.AsyncClient
    """The worker's HTTP client (providers, SMS): tests answer it with respx."""
    shared: dict[str, Any] = field(default_factory=dict)
    """What the worker's jobs share for its lifetime (the payment providers and their tokens)."""


Handler = Callable[[JobContext, dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Periodic:
    kind: str
    every: timedelta


class PermanentJobError(Exception):
    """The job can never succeed (bad payload, vanished target): bury it without retrying."""


class Registry:
    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}
        self.periodic: dict[str, Periodic] = {}
        self.scrubbed: set[str] = set()

    def job(self, kind: str, *, scrub_payload: bool = False) -> Callable[[Handler], Handler]:
        """Register a handler. `scrub_payload`: the payload carries something sealed (a code)
        that must not outlive the job — it is emptied once the job is done or buried."""

        def register(fn: Handler) -> Handler:
            if kind in self.handlers:
                raise ValueError(f"job kind {kind!r} registered twice")
            self.handlers[kind] = fn
            if scrub_payload:
                self.scrubbed.add(kind)
            return fn

        return register

    def every(self, kind: str, every: timedelta) -> Callable[[Handler], Handler]:
        """A job that the worker schedules itself once per `every`."""

        def register(fn: Handler) -> Handler:
            self.job(kind)(fn)
            self.periodic[kind] = Periodic(kind, every)
            return fn

        return register


registry = Registry()
job = registry.job
every = registry.every

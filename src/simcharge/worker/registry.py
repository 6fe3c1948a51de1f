"""Which function runs which kind of job, and which jobs recur."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simcharge.config import Settings
    from simcharge.db import Database
    from simcharge.worker.service import ClaimedJob


@dataclass(frozen=True, slots=True)
class JobContext:
    db: Database
    settings: Settings
    job: ClaimedJob


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

    def job(self, kind: str) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            if kind in self.handlers:
                raise ValueError(f"job kind {kind!r} registered twice")
            self.handlers[kind] = fn
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

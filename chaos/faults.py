"""Provider failure storms: the sandbox as the web and worker processes of a chaos run see it.

The chaos cluster runs `python -m chaos.faults serve|worker …` instead of `simcharge …`: the same
command line, with the sandbox's provider calls (checkout, status query, close, refund, refund
query — the sandbox has no capture) going through `FaultySandbox`. While the storm file (its
path in `STORM_FILE_ENV`) names a time still to come, each such call draws one fault, as an
HTTP provider's adapter would meet them:

- `5xx`: the provider answers 503 at once (a transient `ProviderError`, as `_common.send`
  raises for a 5xx);
- `timeout`: no answer, after `TIMEOUT_SECONDS` (the request never reached the provider);
- `lost answer`: the provider did the work (a refund taken, a payment closed) but its answer
  was lost: a timeout after the call — the case an idempotency key exists for;
- `slow`: the right answer, `SLOW_SECONDS` late;
- none: the right answer at once.

Each fault injected is appended to the faults log (`FAULT_LOG_ENV`) as `<call> <fault>`, which
the run counts. Nothing else of simcharge changes: the payer's hosted page, the sandbox's
webhooks and everything the sandbox keeps are the real ones. After the storm every call
answers again; what was paid during it must still be credited exactly once (by a webhook, the
return, "check now" or reconciliation) and every refund must complete.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from simcharge.payments.providers.base import (
    Checkout,
    CheckoutRequest,
    PaymentStatus,
    ProviderError,
    RefundRequest,
    RefundResult,
)
from simcharge.payments.sandbox import NAME, SandboxProvider

STORM_FILE_ENV = "CHAOS_PROVIDER_STORM_FILE"
"""Where the run writes `{"until": <Unix time>}` while the provider is failing."""
FAULT_LOG_ENV = "CHAOS_PROVIDER_FAULT_LOG"
"""Where each process appends one line per fault it injected."""
TIMEOUT_SECONDS = 3.0
"""How long a call that times out waits first (a real adapter's limit is longer; a chaos run
is short)."""
SLOW_SECONDS = (1.0, 4.0)
FAULTS = ("5xx", "timeout", "lost answer", "slow", "none")
WEIGHTS = (0.35, 0.15, 0.2, 0.15, 0.15)

T = TypeVar("T")


def storm_now(path: str | os.PathLike[str] | None, now: float | None = None) -> str | None:
    """The storm the file at `path` describes: None when there is none now (a missing,
    unreadable or malformed file, or its `until` past — a run that dies mid-storm leaves one
    that ends by itself); else the fault every call gets (`fault`), or "" to draw one per call."""
    if not path:
        return None
    try:
        storm = json.loads(Path(path).read_text())
        until, fault = float(storm["until"]), str(storm.get("fault") or "")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if (time.time() if now is None else now) >= until:
        return None
    return fault if fault in FAULTS else ""


def start_storm(path: Path, seconds: float, fault: str | None = None) -> None:
    """Make the provider fail for `seconds` from now, each call with a fault drawn from
    `FAULTS` — or with `fault` (tests). Written whole: a reader never sees half of it."""
    part = path.with_suffix(".part")
    part.write_text(json.dumps({"until": time.time() + seconds, "fault": fault}))
    part.replace(path)


def end_storm(path: Path) -> None:
    path.unlink(missing_ok=True)


def count_faults(path: Path) -> dict[str, dict[str, int]]:
    """The faults log, by call and fault: `{"refund": {"lost answer": 3, …}, …}`."""
    found: dict[str, Counter[str]] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    for line in lines:
        call, _, fault = line.partition(" ")
        if fault:
            found.setdefault(call, Counter())[fault] += 1
    return {call: dict(sorted(n.items())) for call, n in sorted(found.items())}


@dataclass
class FaultySandbox(SandboxProvider):
    """The sandbox, failing as `FAULTS` say while the storm is on (see the module's text)."""

    storm_file: str | None = field(default_factory=lambda: os.environ.get(STORM_FILE_ENV))
    fault_log: str | None = field(default_factory=lambda: os.environ.get(FAULT_LOG_ENV))
    rng: random.Random = field(default_factory=random.Random)

    def _draw(self) -> str:
        storm = storm_now(self.storm_file)
        if storm is None:
            return "none"
        return storm or self.rng.choices(FAULTS, WEIGHTS)[0]

    def _note(self, call: str, fault: str) -> None:
        if self.fault_log:
            # One short write with O_APPEND: lines from several processes do not interleave.
            with open(self.fault_log, "a") as out:
                out.write(f"{call} {fault}\n")

    async def _through(self, call: str, real: Callable[[], Awaitable[T]]) -> T:
        fault = self._draw()
        if fault == "none":
            return await real()
        self._note(call, fault)
        if fault == "5xx":
            raise ProviderError(NAME, "http_503", f"{call}: 503 Service Unavailable",
                                transient=True, status=503)
        if fault == "timeout":
            await asyncio.sleep(TIMEOUT_SECONDS)
            raise ProviderError(NAME, "timeout", f"{call} timed out", transient=True)
        if fault == "lost answer":
            await real()
            await asyncio.sleep(TIMEOUT_SECONDS)
            raise ProviderError(NAME, "timeout", f"{call} timed out", transient=True)
        await asyncio.sleep(self.rng.uniform(*SLOW_SECONDS))
        return await real()

    async def create_checkout(self, request: CheckoutRequest) -> Checkout:
        return await self._through("checkout", lambda: super(FaultySandbox, self)
                                   .create_checkout(request))

    async def query(self, reference: str, provider_ref: str | None) -> PaymentStatus:
        return await self._through("query", lambda: super(FaultySandbox, self)
                                   .query(reference, provider_ref))

    async def close(self, reference: str, provider_ref: str | None) -> None:
        await self._through("close", lambda: super(FaultySandbox, self)
                            .close(reference, provider_ref))

    async def refund(self, request: RefundRequest) -> RefundResult:
        return await self._through("refund", lambda: super(FaultySandbox, self).refund(request))

    async def query_refund(
        self, request: RefundRequest, provider_refund_id: str | None
    ) -> RefundResult:
        return await self._through("query_refund", lambda: super(FaultySandbox, self)
                                   .query_refund(request, provider_refund_id))


def install() -> None:
    """Every `Providers` made in this process from now on serves the sandbox with
    `FaultySandbox` (the name `registry` calls; nothing else makes a sandbox provider)."""
    from simcharge.payments import registry

    registry.SandboxProvider = FaultySandbox  # type: ignore[attr-defined]


def main() -> None:
    install()
    from simcharge.cli import main as simcharge

    simcharge()


if __name__ == "__main__":
    main()

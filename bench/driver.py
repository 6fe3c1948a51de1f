"""One load driver for every entry: N concurrent workers call an operation for a fixed time."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

Operation = Callable[[random.Random], Awaitable[None]]


@dataclass
class Measurement:
    name: str
    ops: int
    seconds: float
    latencies_ms: list[float]
    errors: int

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
        return ordered[k]

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else 0.0


async def drive(
    name: str, op: Operation, *, concurrency: int, duration: float, warmup: float, seed: int = 1
) -> Measurement:
    """Run `op` from `concurrency` workers for `warmup + duration` seconds; measure the last part."""
    latencies: list[float] = []
    counted = 0
    errors = 0
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + duration

    async def worker(index: int) -> None:
        nonlocal counted, errors
        rng = random.Random(seed * 1000 + index)
        while True:
            began = time.perf_counter()
            if began >= stop_at:
                return
            try:
                await op(rng)
            except Exception:  # noqa: BLE001 - a failed call is counted, not fatal
                errors += 1
                continue
            ended = time.perf_counter()
            if began >= measure_from and ended <= stop_at:
                counted += 1
                latencies.append((ended - began) * 1000)

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return Measurement(name, counted, duration, latencies, errors)

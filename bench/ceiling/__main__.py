"""`python -m bench.ceiling [--duration 8]`: see `bench.ceiling`. Prints each operation's ops/s
and its ratio to `http_baseline` (measured before and after, averaged), beside the entry's
target."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import sys
import time
from pathlib import Path

import asyncpg
import uvloop

from bench import charging, orders
from bench.driver import Measurement, Operation, drive
from bench.entries import BenchContext
from simcharge.payments.sandbox import sign

HERE = Path(__file__).resolve().parent
TARGETS = {"fulfil": 0.35, "nchf": 0.5}
CEILING_ORDERS = 60_000
MIB = 1024 * 1024


def _server_env(ctx: BenchContext) -> dict[str, str]:
    return {
        **charging.server_env(ctx),
        "SIMCHARGE_SANDBOX_ENABLED": "true",
        "SIMCHARGE_SANDBOX_SECRET": orders.SECRET,
        "CEILING_DSN": ctx.dsn(),
        "CEILING_SANDBOX_SECRET": orders.SECRET,
        "CEILING_POOL": str(ctx.concurrency),
    }


async def _serve(ctx: BenchContext, how: str) -> str:
    if how == "grouped":
        return await ctx.serve("bench.ceiling.apps:bare", env=_server_env(ctx))
    if how == "stack":
        return await ctx.serve("bench.ceiling.apps:stack", factory=True, env=_server_env(ctx))
    return await ctx.serve("bench.ceiling.apps:bare", env=_server_env(ctx))


async def _fulfil_op(ctx: BenchContext, how: str, references: list[str]) -> Operation:
    client = ctx.client(await _serve(ctx, how))
    counter = itertools.count()
    run = f"{how}{time.time_ns()}"

    async def op(_rng: random.Random) -> None:
        reference = references.pop()
        event = {"id": f"evt_{run}_{next(counter)}", "type": "payment.succeeded",
                 "created": int(time.time()), "data": {"object": {"reference": reference}}}  # fmt: skip
        body = json.dumps(event, separators=(",", ":")).encode()
        path = "/ceiling/fulfil-grouped" if how == "grouped" else "/ceiling/fulfil"
        r = await client.post(path, content=body, headers={
            "content-type": "application/json", "sandbox-signature": sign(orders.SECRET, body)})  # fmt: skip
        if r.status_code != 200 or r.headers.get("simcharge-outcome") != "fulfilled":
            raise RuntimeError(f"answered {r.status_code} ({r.headers.get('simcharge-outcome')})")

    return op


async def _nchf_op(ctx: BenchContext, how: str, sessions: asyncio.Queue[list[str]]) -> Operation:
    client = ctx.client(await _serve(ctx, how))
    headers = {"authorization": "Bearer ceiling", "content-type": "application/json"}

    async def op(_rng: random.Random) -> None:
        s = await sessions.get()
        try:
            seq = int(s[2]) + 1
            s[2] = str(seq)
            units = [{"ratingGroup": 200, "requestedUnit": {"totalVolume": MIB},
                      "usedUnitContainer": [{"localSequenceNumber": seq, "totalVolume": MIB}]}]  # fmt: skip
            r = await client.post(
                f"/ceiling/nchf/{s[0]}", content=charging._doc(s[1], seq, units), headers=headers
            )
            if r.status_code != 200 or "grantedUnit" not in r.text:
                raise RuntimeError(f"answered {r.status_code}: {r.text[:200]}")
        finally:
            sessions.put_nowait(s)

    return op


async def main(args: argparse.Namespace) -> int:
    ctx = BenchContext(
        admin_url=os.environ.get(
            "SIMCHARGE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        concurrency=16,
    )
    print("preparing the bench database …", flush=True)
    await ctx.prepare()
    found: dict[str, Measurement] = {}

    async def measure(name: str, op: Operation) -> Measurement:
        try:
            m = await drive(name, op, concurrency=ctx.concurrency, duration=args.duration,
                            warmup=args.warmup)  # fmt: skip
        finally:
            await ctx.release()
        print(f"  {name:24} {m.ops_per_s:8.1f} ops/s  p50 {m.p50_ms:.2f} ms"
              + (f"  errors {m.errors}" if m.errors else ""), flush=True)  # fmt: skip
        return m

    try:
        # Both fulfil rows draw on them: enough for a fast machine's 2 × 12 s (≈ 1,300/s seen).
        objects = await ctx.database().run(lambda s: orders._seed(s, CEILING_ORDERS))
        references = [o["reference"] for o in reversed(objects)]
        await charging.nchf_update(ctx)  # its seed, and its sessions created through simcharge
        await ctx.release()
        conn = await asyncpg.connect(ctx.dsn())
        try:
            await conn.execute((HERE / "fulfil.sql").read_text())
            await conn.execute((HERE / "nchf.sql").read_text())
            rows = await conn.fetch(
                "SELECT c.session_id, s.subscriber, s.sequence FROM ceiling_pending c"
                " JOIN charging_sessions s ON s.id = c.session_id"
            )
        finally:
            await conn.close()
        sessions: asyncio.Queue[list[str]] = asyncio.Queue()
        for row in rows:
            sessions.put_nowait([str(row[0]), row[1], str(row[2])])
        baseline = await ctx.operation("http_baseline", ctx.concurrency)
        baselines = [await measure("http_baseline", baseline)]
        for how in args.how:
            name = f"fulfil ({how})"
            found[name] = await measure(name, await _fulfil_op(ctx, how, references))
            if how == "grouped":
                continue
            name = f"nchf ({how})"
            found[name] = await measure(name, await _nchf_op(ctx, how, sessions))
        baseline = await ctx.operation("http_baseline", ctx.concurrency)
        baselines.append(await measure("http_baseline", baseline))
    finally:
        await ctx.close()
    base = sum(b.ops_per_s for b in baselines) / len(baselines)
    print(f"\nhttp_baseline@16 (average of before and after): {base:.1f} ops/s\n")
    print(f"{'ceiling':24} {'ops/s':>8} {'ratio':>6}  target of the entry")
    for name, m in found.items():
        target = TARGETS[name.split()[0]]
        print(f"{name:24} {m.ops_per_s:8.1f} {m.ops_per_s / base:6.2f}  ≥ {target}")
    return 1 if any(m.errors for m in found.values()) else 0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.ceiling", description=__doc__)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds run before measuring")
    parser.add_argument("--how", nargs="*", default=["stack", "bare", "grouped"],
                        help="which rows: stack, bare, grouped (fulfil only)")  # fmt: skip
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(uvloop.run(main(parse(sys.argv[1:]))))

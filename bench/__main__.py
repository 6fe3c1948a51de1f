"""`make bench`: run the benchmark entries against PostgreSQL and write bench/results.json.

Every entry is compared with a baseline measured in the same run, by the same driver, at the
same concurrency: `db_baseline` (raw asyncpg: one `UPDATE … RETURNING` and one `INSERT` per
transaction on a 100k-row table) or `http_baseline` (a bare ASGI endpoint doing the same,
served by uvicorn as simcharge is). The machine is shared and noisy, so each baseline is
measured before and after the entries and averaged; compare ratios, not absolute figures.

    python -m bench [--duration 10] [--warmup 2] [--concurrency 16] [--only ledger_transfer]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import uvloop

from bench.driver import Measurement, drive
from bench.entries import ENTRIES, ONCE, BenchContext

RESULTS = Path(__file__).resolve().parent / "results.json"


def _table(rows: list[dict[str, object]], baselines: dict[str, float]) -> str:
    lines = [
        "",
        f"{'entry':28} {'ops/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'baseline':>14} {'ratio':>7}",
    ]
    lines.append("-" * len(lines[1]))
    for name, value in baselines.items():
        lines.append(f"{name:28} {value:10.1f} {'':>8} {'':>8} {'':>14} {'':>7}")
    for r in rows:
        lines.append(
            f"{r['name']!s:28} {r['ops_per_s']:10.1f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} "
            f"{r['baseline']!s:>14} {r['ratio']:7.2f}"
        )
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> int:
    ctx = BenchContext(
        admin_url=os.environ.get(
            "SIMCHARGE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        concurrency=args.concurrency,
    )
    selected = [e for e in ENTRIES if not args.only or e.name in args.only]
    once = [e for e in ONCE if not args.only or e.name in args.only]
    wanted_baselines = sorted({e.baseline for e in selected})
    print(f"preparing the bench database (concurrency {args.concurrency}) …", flush=True)
    await ctx.prepare()

    async def measure(name: str, concurrency: int | None = None) -> Measurement:
        op = await ctx.operation(name)
        m = await drive(
            name, op, concurrency=concurrency or args.concurrency, duration=args.duration,
            warmup=args.warmup,
        )
        print(
            f"  {name:28} {m.ops_per_s:10.1f} ops/s  p50 {m.p50_ms:.2f} ms  p99 {m.percentile(99):.2f} ms"
            + (f"  errors {m.errors}" if m.errors else ""),
            flush=True,
        )
        return m

    once_results: dict[str, dict[str, object]] = {}
    try:
        before = {b: await measure(b) for b in wanted_baselines}
        measured = [(e, await measure(e.name, e.concurrency)) for e in selected]
        after = {b: await measure(b) for b in wanted_baselines}
        for entry in once:
            print(f"  {entry.name} …", flush=True)
            once_results[entry.name] = await entry.run(ctx)
            print(f"  {entry.name:28} {once_results[entry.name]}", flush=True)
    finally:
        await ctx.close()

    baselines = {b: (before[b].ops_per_s + after[b].ops_per_s) / 2 for b in wanted_baselines}
    results = [
        {
            "name": e.name,
            "baseline": e.baseline,
            "ops_per_s": round(m.ops_per_s, 1),
            "p50_ms": round(m.p50_ms, 2),
            "p95_ms": round(m.percentile(95), 2),
            "p99_ms": round(m.percentile(99), 2),
            "ratio": round(m.ops_per_s / baselines[e.baseline], 3)
            if baselines[e.baseline]
            else 0.0,
            "errors": m.errors,
            "concurrency": e.concurrency or args.concurrency,
            **(
                {"target_p95_ms": e.target_p95_ms,
                 "meets_target": m.percentile(95) < e.target_p95_ms}
                if e.target_p95_ms
                else {}
            ),
        }
        for e, m in measured
    ]
    document = {
        "baselines": {b: {"ops_per_s": round(v, 1)} for b, v in baselines.items()},
        "results": results,
        "once": once_results,
        "settings": {
            "concurrency": args.concurrency,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
        },
    }
    RESULTS.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(_table(results, baselines))
    print(f"\nwritten to {RESULTS}")
    failed = [r for r in results if r["errors"]]
    return 1 if failed else 0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per entry")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds run before measuring")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent workers")
    parser.add_argument("--only", nargs="*", help="entry names to run")
    return parser.parse_args(argv)


if __name__ == "__main__":
    # uvloop, as in production (uvicorn[standard] serves on it; `simcharge worker` runs on it).
    sys.exit(uvloop.run(main(parse(sys.argv[1:]))))

"""What a bench run reports: the `results.json` document and the table printed from it.

The document keeps the shape the foundation issue set —
`{"baselines": {"db_baseline": {"ops_per_s"}, "http_baseline": {"ops_per_s"}}, "results":
[{"name", "baseline", "ops_per_s", "p50_ms", "p99_ms", "ratio"}, …]}` — and adds to it: each
baseline at every concurrency an entry ran at (`by_concurrency`), each entry's concurrency and
the baseline figure its ratio was taken against, p95, errors, and every target with whether it
was met. The table is printed from the document, so both always say the same.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench.driver import Measurement
from bench.entries import Entry, OnceEntry, Target

BASELINE_NAMES = ("db_baseline", "http_baseline")


@dataclass(frozen=True)
class Driven:
    """An entry driven for a duration, and what was measured."""

    entry: Entry
    concurrency: int
    measurement: Measurement


def _targets(targets: Sequence[Target], figures: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "metric": t.metric,
            "op": t.op,
            "value": t.value,
            "actual": figures.get(t.metric),
            "met": figures.get(t.metric) is not None and t.met(float(figures[t.metric])),
        }
        for t in targets
    ]


def _verdict(targets: list[dict[str, Any]], errors: int) -> bool | None:
    """Whether the entry met what its issue asks (all its targets, and no failed call); None
    for an entry without a target."""
    if not targets:
        return None
    return errors == 0 and all(t["met"] for t in targets)


def build_document(
    *,
    baselines: Mapping[tuple[str, int], float],
    driven: Sequence[Driven],
    once: Sequence[tuple[OnceEntry, Mapping[str, Any]]],
    concurrency: int,
    settings: Mapping[str, Any],
) -> dict[str, Any]:
    """`baselines`: ops/s by (baseline, concurrency); both baselines must be there at the run's
    `concurrency`, and each driven entry's baseline at the entry's own concurrency."""
    document_baselines: dict[str, Any] = {}
    for name in BASELINE_NAMES:
        measured = {c: v for (n, c), v in sorted(baselines.items()) if n == name}
        if concurrency not in measured:
            raise ValueError(f"{name} was not measured at the run's concurrency {concurrency}")
        document_baselines[name] = {
            "ops_per_s": round(measured[concurrency], 1),
            "concurrency": concurrency,
            "by_concurrency": {str(c): round(v, 1) for c, v in measured.items()},
        }
    results = []
    for d in driven:
        m = d.measurement
        key = (d.entry.baseline, d.concurrency)
        if key not in baselines:
            raise ValueError(f"{d.entry.name}: {d.entry.baseline} not measured at {d.concurrency}")
        baseline = baselines[key]
        figures: dict[str, Any] = {
            "name": d.entry.name,
            "baseline": d.entry.baseline,
            "concurrency": d.concurrency,
            "ops_per_s": round(m.ops_per_s, 1),
            "p50_ms": round(m.p50_ms, 2),
            "p95_ms": round(m.percentile(95), 2),
            "p99_ms": round(m.percentile(99), 2),
            "baseline_ops_per_s": round(baseline, 1),
            "ratio": round(m.ops_per_s / baseline, 3) if baseline else 0.0,
            "errors": m.errors,
        }
        figures["targets"] = _targets(d.entry.targets, figures)
        figures["meets_target"] = _verdict(figures["targets"], m.errors)
        results.append(figures)
    once_results: dict[str, Any] = {}
    for entry, reported in once:
        figures = dict(reported)
        figures["targets"] = _targets(entry.targets, figures)
        figures["meets_target"] = _verdict(figures["targets"], 0)
        once_results[entry.name] = figures
    verdicts = [r["meets_target"] for r in (*results, *once_results.values())]
    return {
        "baselines": document_baselines,
        "results": results,
        "once": once_results,
        "all_targets_met": all(v is not False for v in verdicts),
        "settings": dict(settings),
    }


def _target_text(targets: Sequence[Mapping[str, Any]]) -> str:
    symbol = {">=": "≥", "<": "<"}
    return ", ".join(f"{t['metric']} {symbol[t['op']]} {t['value']:g}" for t in targets) or "-"


def _met_text(verdict: bool | None) -> str:
    return {True: "yes", False: "NO", None: "-"}[verdict]


def render_table(document: Mapping[str, Any]) -> str:
    head = (
        f"{'entry':24} {'workers':>7} {'ops/s':>10} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'compared with':>20} {'ratio':>6}  {'target':24} met"
    )
    lines = ["", head, "-" * len(head)]
    for name, b in document["baselines"].items():
        for c, value in b["by_concurrency"].items():
            lines.append(f"{name:24} {c:>7} {value:10.1f}")
    for r in document["results"]:
        against = f"{r['baseline']}@{r['concurrency']}"
        lines.append(
            f"{r['name']:24} {r['concurrency']:>7} {r['ops_per_s']:10.1f} {r['p50_ms']:8.2f} "
            f"{r['p95_ms']:8.2f} {r['p99_ms']:8.2f} {against:>20} {r['ratio']:6.2f}  "
            f"{_target_text(r['targets']):24} {_met_text(r['meets_target'])}"
            + (f"  ({r['errors']} errors)" if r["errors"] else "")
        )
    for name, figures in document["once"].items():
        shown = ", ".join(
            f"{k} {v}" for k, v in figures.items() if k not in ("targets", "meets_target")
        )
        lines.append(f"{name + ' (run once)':24} {shown}")
        if figures["targets"]:
            lines.append(
                f"{'':24} target {_target_text(figures['targets'])}: "
                f"{_met_text(figures['meets_target'])}"
            )
    missed = [r["name"] for r in document["results"] if r["meets_target"] is False] + [
        n for n, f in document["once"].items() if f["meets_target"] is False
    ]
    lines.append("")
    lines.append(
        "every target met" if not missed else f"targets missed: {', '.join(missed)}"
    )
    return "\n".join(lines)

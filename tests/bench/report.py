"""Rows of the benchmark's table: a figure, its baseline from the same run, the ratio, the goal."""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Row:
    stack: str
    group: str
    figure: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_label: str = ""
    #: value / baseline (or baseline / value when lower is better and the goal is a speed-up)
    ratio: float | None = None
    goal: str = ""
    #: True met, False missed, None no goal (or not measured)
    passed: bool | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def row(stack: str, group: str, figure: str, value: float | None, unit: str, *,
        baseline: float | None = None, baseline_label: str = "", goal: str = "",
        check: Callable[[float, float | None], bool] | None = None, note: str = "",
        **extra: Any) -> Row:
    """A row; ``check(value, baseline)`` decides the goal when both are numbers."""
    ratio = None
    if value is not None and baseline not in (None, 0) and not math.isnan(value) and not math.isnan(baseline):
        ratio = value / baseline
    if baseline == 0:  # e.g. a broker's CPU over a few jobs: under one tick of the kernel's clock
        note = "; ".join(filter(None, [note, "the baseline measured 0 (too small to measure at this size): no ratio"]))
    passed = None
    if check is not None and value is not None and not math.isnan(value):
        passed = bool(check(value, baseline))
    return Row(stack, group, figure, value, unit, baseline, baseline_label, ratio, goal, passed, note, extra)


def skipped(stack: str, group: str, figure: str, reason: str, unavailable: bool = False) -> Row:
    """A figure that could not be measured: ``unavailable`` (a tool is missing) or failed."""
    return Row(stack, group, figure, None, "", note=f"{'unavailable' if unavailable else 'failed'}: {reason}")


def _num(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


def table(rows: list[Row]) -> str:
    head = ["stack", "figure", "value", "baseline (same run)", "ratio", "goal", "mark"]
    lines = []
    for r in rows:
        mark = {True: "PASS", False: "MISS", None: ""}[r.passed]
        base = f"{_num(r.baseline, r.unit)} ({r.baseline_label})" if r.baseline is not None else "-"
        lines.append([r.stack, r.figure, _num(r.value, r.unit), base, f"{r.ratio:.2f}x" if r.ratio is not None else "-",
                      r.goal or "-", mark or ("" if not r.note else "note")])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=False)]
    widths = [min(w, 60) for w in widths]

    def fmt(cells: list[str]) -> str:
        return "  ".join(str(c)[:w].ljust(w) for c, w in zip(cells, widths, strict=False)).rstrip()

    out = [fmt(head), fmt(["-" * w for w in widths])]
    out += [fmt(cells) for cells in lines]
    notes = [f"  [{r.stack}] {r.figure}: {r.note}" for r in rows if r.note]
    if notes:
        out += ["", "notes:", *notes]
    return "\n".join(out)


def write_json(path: Path, rows: list[Row], meta: dict[str, Any]) -> None:
    uname = platform.uname()
    payload = {
        "meta": {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host": uname.node,
                 "machine": f"{uname.system} {uname.release} {uname.machine}", "cpus": _cpus(),
                 "python": platform.python_version(), **meta},
        "rows": [_finite(asdict(r)) for r in rows],
    }
    path.write_text(json.dumps(payload, indent=2, default=str, allow_nan=False))


def _finite(value: Any) -> Any:
    """NaN (a percentile of nothing) as null: strict JSON for any reader."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))

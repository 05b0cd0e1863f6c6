"""``python -m tests.bench`` (``make bench``): the performance figures of the embedded stack and of
Mosquitto + PostgreSQL, each with its baseline measured in the same run and its goal.

    python -m tests.bench --size tiny|small|full --only managers,idle --stacks embedded --profile

Prints a table (figure, value, baseline, ratio, goal, PASS/MISS) and writes the rows as JSON
(the path is printed). docs/bench.md says what each figure is and how it is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tests.bench.procs import python_loop_ms
from tests.bench.report import Row, skipped, table, write_json
from tests.bench.sizes import ALONE, DEFAULT_GROUPS, GROUPS, SIZES, STACKS


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=sorted(SIZES), default="small",
                   help="tiny (proves it works; 1-2 min), small (usable figures), full (the goals' sizes)")
    p.add_argument("--only", default="", help=f"comma-separated figure groups: {','.join(GROUPS)} (default: all but "
                        f"{','.join(ALONE)}, which runs only alone)")
    p.add_argument("--stacks", default=",".join(STACKS), help=f"comma-separated: {','.join(STACKS)}")
    p.add_argument("--profile", action="store_true",
                   help="attach py-spy to each service process and save a speedscope profile")
    p.add_argument("--out", type=Path, help="results directory (default: a new one under the temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the work files (logs, databases, spools)")
    p.add_argument("--json", type=Path, help="also write the results JSON here")
    args = p.parse_args(argv)
    args.groups = [g for g in args.only.split(",") if g] or list(DEFAULT_GROUPS)
    unknown = set(args.groups) - set(GROUPS)
    if unknown:
        p.error(f"unknown figure groups: {', '.join(sorted(unknown))}")
    alone = set(args.groups) & set(ALONE)
    if alone and len(args.groups) > 1:
        p.error(f"{', '.join(sorted(alone))} runs alone (the service runs under valgrind): "
                f"--only {','.join(sorted(alone))}")
    if alone and args.profile:
        p.error("--profile cannot attach to a service under valgrind")
    args.stack_list = [s for s in args.stacks.split(",") if s]
    if set(args.stack_list) - set(STACKS):
        p.error(f"unknown stacks: {', '.join(sorted(set(args.stack_list) - set(STACKS)))}")
    return args


async def bench(args: argparse.Namespace, out: Path) -> list[Row]:
    from tests.bench.runner import StackRun

    size = SIZES[args.size]
    rows: list[Row] = []
    work = out / "work"

    def say(line: str) -> None:
        print(line, flush=True)

    for kind in args.stack_list:
        run = StackRun(kind, size, set(args.groups), work, out, args.profile, say)
        try:
            rows += await run.run()
        except Exception as exc:  # a stack that cannot start: say why, run the next one
            from tests.bench.procs import Unavailable

            rows += run.rows
            reason = str(exc) if isinstance(exc, Unavailable) else f"{type(exc).__name__}: {exc}"
            rows.append(skipped(kind, "stack", f"{kind} stack", reason, unavailable=isinstance(exc, Unavailable)))
            say(f"[{kind}] stack failed: {type(exc).__name__}: {exc}")
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it (broker, fleet)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or Path(tempfile.gettempdir()) / f"cloudimaging-bench-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    print(f"cloudimaging bench: size {args.size}, stacks {','.join(args.stack_list)}, "
          f"figures {','.join(args.groups)}", flush=True)
    loop_ms = python_loop_ms()
    print(f"this machine's speed: a fixed pure-Python loop takes {loop_ms:.0f} ms of CPU "
          "(compare runs of different days by it)", flush=True)
    try:
        rows = asyncio.run(bench(args, out))
    finally:
        if not args.keep:
            shutil.rmtree(out / "work", ignore_errors=True)
    elapsed = time.monotonic() - started
    print()
    print(table(rows))
    results = out / "results.json"
    meta = {"size": args.size, "stacks": args.stack_list, "groups": args.groups, "seconds": round(elapsed, 1),
            "python_loop_ms": round(loop_ms, 1),
            "argv": sys.argv[1:] if argv is None else argv}
    write_json(results, rows, meta)
    if args.json:
        args.json.write_text(results.read_text())
    print(f"\nresults: {results}  ({elapsed:.0f} s)")
    missed = sum(1 for r in rows if r.passed is False)
    print(f"goals: {sum(1 for r in rows if r.passed)} met, {missed} missed, "
          f"{sum(1 for r in rows if r.value is None)} figures not measured")
    json.loads(results.read_text())  # the file is valid JSON
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

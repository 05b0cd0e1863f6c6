"""Counting a process's instructions with callgrind, where its CPU time cannot be trusted.

On a shared virtual machine the CPU time of the same work moves 1.5-2x from one run to the next
and within one run (docs/bench.md: the fixed loop took 62-143 ms in one evening), so a change worth
ten or twenty percent of a job's CPU can hide in it. Instructions show it: valgrind's callgrind
counts each one a process executes in user space, whatever else the machine is doing. The same
code gives counts within 2-5% of each other (how many messages arrive together still depends on
timing). What it does not count: the kernel's work for the process (system calls, page faults;
the ``fleet`` group's note gives it in ms), and how long an instruction waits for memory or for
another process.

A process runs under ``valgrind --tool=callgrind --instr-atstart=no``: uninstrumented (a few
times slower) until ``Callgrind.start`` switches counting on for the measured jobs, then about
fifty times slower. That is why the ``instructions`` group runs alone: every other figure of a
run with the service under valgrind would measure valgrind.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

from tests.bench.procs import Unavailable


def tools() -> tuple[str, str]:
    """valgrind and callgrind_control, or the bench's Unavailable naming the package."""
    valgrind, control = shutil.which("valgrind"), shutil.which("callgrind_control")
    if valgrind is None or control is None:
        raise Unavailable("valgrind is not installed (Debian: apt-get install valgrind)")
    return valgrind, control


def prefix(out: Path) -> list[str]:
    """The command line that runs a program under callgrind, counting nothing until told to."""
    valgrind, _ = tools()
    return [valgrind, "--tool=callgrind", f"--callgrind-out-file={out}", "--instr-atstart=no"]


def summary(path: Path) -> int:
    """The instructions a callgrind dump file counted (its ``summary:`` or ``totals:`` line)."""
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise ValueError(f"{path}: no summary line")


class Callgrind:
    """Counting on and off in a process started with ``prefix(out)``."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self._control = tools()[1]
        self.pid: int | None = None

    async def _call(self, *args: str) -> None:
        assert self.pid is not None, "the process under callgrind has not started"
        done = await asyncio.to_thread(subprocess.run, [self._control, *args, str(self.pid)],
                                       capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"callgrind_control {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")

    async def start(self) -> None:
        """Count from now (from zero)."""
        await self._call("--instr=on")
        await self._call("--zero")

    async def stop(self) -> int:
        """Stop counting; the instructions counted since ``start``."""
        before = set(self.out.parent.glob(f"{self.out.name}.*"))
        await self._call("--dump")
        await self._call("--instr=off")
        made = sorted(set(self.out.parent.glob(f"{self.out.name}.*")) - before, key=lambda p: p.stat().st_mtime)
        if not made:
            raise RuntimeError(f"callgrind wrote no dump next to {self.out}")
        return summary(made[-1])

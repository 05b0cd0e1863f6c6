"""The transform pool's workers and a terminal's Ctrl-C: SIGINT, which a terminal sends to every
process of ``make run``, ends an idle worker as the system's default does (killed by the signal),
without the KeyboardInterrupt traceback each worker printed; the pool is the service's to stop."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Run as a script of its own: "spawn" workers import the main module, and pytest's is not one.
SCRIPT = """
import os, signal
from cloud_service.transform.service import Transformer

if __name__ == "__main__":
    transformer = Transformer(workers=1)
    pool = transformer._executor()
    pid = pool.submit(os.getpid).result(timeout=60)
    worker = pool._processes[pid]
    os.kill(pid, signal.SIGINT)
    worker.join(20)
    print("exitcode", worker.exitcode, flush=True)
    transformer._reset()
"""


def test_an_interrupted_worker_ends_without_a_traceback(tmp_path: Path) -> None:
    script = tmp_path / "interrupt_worker.py"
    script.write_text(SCRIPT)
    done = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "exitcode -2" in done.stdout, (done.stdout, done.stderr[-2000:])  # killed by SIGINT itself
    assert "Traceback" not in done.stderr and "KeyboardInterrupt" not in done.stderr, done.stderr[-2000:]

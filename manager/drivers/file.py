"""The ``file`` driver: "prints" each document by writing its bytes to a directory.

Useful for tests, for archiving, and as a hot folder for another system. Output files:

- ``{output_dir}/job-{id}-doc-{n}{ext}``: the document's bytes, unchanged;
- ``{output_dir}/job-{id}.ticket.json``: the job ticket with IPP attribute names.

Both appear under a temporary name and are renamed, so a reader of the directory never sees a
half-written file as printed; a document is hard-linked from the spool where it can be.
Impressions are copies x pages (schemas.model.pages).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import tempfile
import threading
from pathlib import Path

from manager.drivers.base import (
    DocumentTask,
    DriverError,
    DriverOptions,
    PrintCanceled,
    PrintDriver,
    PrintJob,
    Progress,
)
from schemas.enums import JobState
from schemas.model.pages import count_pages, extension
from schemas.supplies import Supplies


class FileOptions(DriverOptions):
    #: Where output goes; ``{state_dir}/output/{service}`` when not given.
    output_dir: Path | None = None
    #: Supplies to report (a folder has none; ``cloudimaging up`` gives its printer a set, so the
    #: tour shows them on the API, the CLI, IPP and the console).
    supplies: Supplies = []


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so the file appears complete or not at all."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class FileDriver(PrintDriver):
    kind = "file"
    Options = FileOptions
    options: FileOptions

    def __init__(self, name: str, options: dict[str, object], state_dir: Path) -> None:
        super().__init__(name, options, state_dir)
        self.output_dir = self.options.output_dir or self.state_dir / "output" / name
        self._canceled: set[int] = set()
        self._lock = threading.Lock()
        self.supplies = tuple(self.options.supplies)

    async def open(self) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)

    async def start_job(self, job: PrintJob) -> None:
        data = json.dumps(job.ticket.wire(), indent=2, sort_keys=True).encode() + b"\n"
        await asyncio.to_thread(atomic_write, self.output_dir / f"job-{job.job_id}.ticket.json", data)

    async def print_document(self, task: DocumentTask, path: Path, progress: Progress) -> int:
        target = self.output_dir / f"job-{task.job.job_id}-doc-{task.document_number}{extension(task.document_format)}"
        try:
            pages = await asyncio.to_thread(self._write, task.job.job_id, path, target, task.document_format)
        except OSError as exc:
            raise DriverError(f"cannot write {target.name}: {exc.strerror}", ("aborted-by-system",)) from None
        impressions = pages * task.job.copies
        progress(impressions)
        return impressions

    def _write(self, job_id: int, source: Path, target: Path, document_format: str) -> int:
        """Count the spooled document's pages, then give it its output name: a hard link where
        the spool and the output directory share a file system (no byte is copied: the spool is
        never written in place, a fresh download replaces it by rename), else a copy."""
        pages = count_pages(source, document_format)
        with self._lock:
            if job_id in self._canceled:
                raise PrintCanceled(f"job {job_id} canceled")
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            try:
                os.link(source, tmp)
            except OSError:
                shutil.copyfile(source, tmp)
            os.replace(tmp, target)
            return pages
        finally:
            tmp.unlink(missing_ok=True)

    def cancel(self, job_id: int) -> None:
        with self._lock:
            self._canceled.add(job_id)

    async def end_job(self, job_id: int, state: JobState) -> None:
        with self._lock:
            self._canceled.discard(job_id)

"""The Manager's durable journal: SQLite in its state directory.

A claimed job is written here before it is printed, and every step after (printing which
document, which documents are done, impressions, the final state) is written before the
Manager acts on it or reports it. After a crash or SIGKILL the Manager reloads the journal,
lists the jobs in its Hello, and finishes each one by the policy in docs/reliability.md, so
a job is never silently printed again in full.

Job ids belong to one service database: the journal records which (``meta.instance``, from
Sync.instance) and, when the service reports another, closes the old database's jobs out
(kept in ``closed_out`` for the operator) and forgets its finished ids in one transaction.
Each finished id is kept with the job's job-uuid at the service, its impressions and
whether anything was output, so a restored copy of the database can be told apart from a new job
reusing the id (manager.runner). Journals written before those columns existed gain them at open
(unknown uuid: such an id is judged as before, a doorbell for it ignored).

WAL with synchronous=NORMAL: a committed write survives the process being killed (the
operating system has it); only a power loss can lose the last transactions.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path

from manager.jobbook import Finished, JobBook, JobRecord, Phase
from schemas.enums import JobState
from schemas.messages import DocumentAccess
from schemas.tickets import DestinationStatus, ticket_model

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (job_id INTEGER PRIMARY KEY, data TEXT NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS finished (job_id INTEGER PRIMARY KEY, state TEXT, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS closed_out (instance TEXT, job_id INTEGER, data TEXT NOT NULL, at REAL NOT NULL);
"""
#: Columns added to ``finished`` after its first release: (name, declaration).
FINISHED_COLUMNS = (("uuid", "TEXT"), ("impressions", "INTEGER NOT NULL DEFAULT 0"),
                    ("on_paper", "INTEGER NOT NULL DEFAULT 0"))
#: Finished job ids are kept this long so late doorbells for them are ignored after a restart.
FINISHED_KEEP_SECONDS = 7 * 24 * 3600


def _dump(record: JobRecord) -> str:
    return json.dumps({
        "version": record.version, "state": record.state.value, "reasons": list(record.reasons),
        "phase": record.phase.value, "service": record.service,
        "kind": record.kind, "ticket": record.ticket.wire() if record.ticket else None,
        "destination_statuses": [d.wire() for d in record.destination_statuses],
        "document_count": record.document_count,
        "documents": {str(n): d.model_dump(mode="json") for n, d in record.documents.items()},
        "impressions_completed": record.impressions_completed, "claimed": record.claimed,
        "cancel_requested": record.cancel_requested, "documents_done": sorted(record.documents_done),
        "printing_document": record.printing_document, "message": record.message,
        "created_at": record.created_at, "uuid": record.uuid,
        "replay": record.replay.value if record.replay else None,
    })


def _load(job_id: int, text: str) -> JobRecord:
    data = json.loads(text)
    return JobRecord(
        job_id=job_id, version=data["version"], state=JobState(data["state"]), reasons=tuple(data["reasons"]),
        phase=Phase(data["phase"]), service=data["service"],
        kind=data.get("kind", "print"),
        ticket=ticket_model(data.get("kind", "print")).model_validate(data["ticket"])
        if data["ticket"] is not None else None,
        destination_statuses=[DestinationStatus.model_validate(d) for d in data.get("destination_statuses", [])],
        document_count=data["document_count"],
        documents={int(n): DocumentAccess.model_validate(d) for n, d in data["documents"].items()},
        impressions_completed=data["impressions_completed"], claimed=data["claimed"],
        cancel_requested=data["cancel_requested"], documents_done=set(data["documents_done"]),
        printing_document=data["printing_document"], message=data["message"], created_at=data["created_at"],
        uuid=data.get("uuid"), replay=JobState(data["replay"]) if data.get("replay") else None,
    )


def _private_file(path: Path) -> None:
    """The journal names jobs, documents and users: its directory 0700, the file 0600, made
    before SQLite opens it (SQLite gives the -wal and -shm files the database file's mode)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for item, mode in ((path.parent, 0o700), (path, 0o600)):
        with contextlib.suppress(OSError):
            st = item.stat()
            if st.st_uid == os.getuid() and st.st_mode & 0o077:
                os.chmod(item, mode)


class JournalJobBook(JobBook):
    """A JobBook whose records and finished ids live in ``{state_dir}/journal.sqlite`` (private)."""

    def __init__(self, path: Path, **kwargs: float) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        _private_file(path)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._migrate()
        cutoff = time.time() - FINISHED_KEEP_SECONDS
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'instance'").fetchone()
            self.instance = row[0] if row else None
            self._db.execute("DELETE FROM finished WHERE at < ?", (cutoff,))
            self._db.execute("DELETE FROM closed_out WHERE at < ?", (cutoff,))
            for job_id, state, uuid, impressions, on_paper in self._db.execute(
                    "SELECT job_id, state, uuid, impressions, on_paper FROM finished ORDER BY at"):
                entry = Finished(JobState(state) if state else None, uuid, impressions, bool(on_paper))
                super().forget(job_id, entry.state, remember=True, finished=entry)

    def _migrate(self) -> None:
        """Add the columns a journal of an older release lacks (their defaults: unknown)."""
        have = {row[1] for row in self._db.execute("PRAGMA table_info(finished)")}
        for name, declaration in FINISHED_COLUMNS:
            if name not in have:
                self._db.execute(f"ALTER TABLE finished ADD COLUMN {name} {declaration}")

    def load(self) -> list[JobRecord]:
        """Journaled records, added back to the book (call once at start)."""
        with self._lock:
            rows = self._db.execute("SELECT job_id, data FROM jobs ORDER BY job_id").fetchall()
        records = [_load(job_id, data) for job_id, data in rows]
        for record in records:
            self._jobs[record.job_id] = record
        return records

    def save(self, record: JobRecord) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO jobs (job_id, data, updated) VALUES (?, ?, ?)",
                             (record.job_id, _dump(record), time.time()))

    def set_instance(self, instance: str) -> None:
        super().set_instance(instance)
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('instance', ?)", (instance,))

    def rebase(self, instance: str) -> list[JobRecord]:
        """As JobBook.rebase, in one transaction; the closed-out records are kept aside (table
        ``closed_out``, a week) for the operator, never loaded again."""
        old = self.instance
        closed = super().rebase(instance)
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT INTO closed_out (instance, job_id, data, at) VALUES (?, ?, ?, ?)",
                                 [(old, r.job_id, _dump(r), now) for r in closed])
            self._db.execute("DELETE FROM jobs")
            self._db.execute("DELETE FROM finished")
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('instance', ?)", (instance,))
            self._db.execute("COMMIT")
        return closed

    def forget(self, job_id: int, state: JobState | None = None, remember: bool = True,
               finished: Finished | None = None) -> None:
        super().forget(job_id, state, remember, finished)
        entry = finished if finished is not None else Finished(state)
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM jobs WHERE job_id = ?", (job_id,))
            if remember:
                self._db.execute(
                    "INSERT OR REPLACE INTO finished (job_id, state, at, uuid, impressions, on_paper) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (job_id, entry.state.value if entry.state else None, time.time(), entry.uuid,
                     entry.impressions, int(entry.on_paper)))
            self._db.execute("COMMIT")

    def unfinish(self, job_id: int) -> None:
        super().unfinish(job_id)
        with self._lock:
            self._db.execute("DELETE FROM finished WHERE job_id = ?", (job_id,))

    def close(self) -> None:
        with self._lock:
            self._db.close()

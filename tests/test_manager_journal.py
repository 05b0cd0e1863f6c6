"""The Manager's journal: records survive a restart, and the recovery policy is applied
against the real service (a job cut mid-print is aborted, never printed again in full;
queued jobs are printed after the restart)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from manager.jobbook import JobRecord, Phase
from manager.journal import JournalJobBook
from schemas.enums import JobState
from schemas.tickets import PrintJobTicket
from tests.support.documents import pdf_bytes
from tests.support.stack import running_stack


def test_round_trip_and_finished_ids(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    book = JournalJobBook(path)
    record = JobRecord(7, version=4, state=JobState.PROCESSING, reasons=("job-printing",), phase=Phase.PRINTING,
                       service="p", ticket=PrintJobTicket(copies=2), document_count=2, claimed=True,
                       impressions_completed=3, documents_done={1}, printing_document=2)
    book.add(record)
    book.add(JobRecord(8, claimed=True, phase=Phase.QUEUED, service="p"))
    book.forget(8, JobState.COMPLETED)
    book.close()

    again = JournalJobBook(path)
    [loaded] = again.load()
    assert loaded.job_id == 7 and loaded.version == 4 and loaded.phase is Phase.PRINTING
    assert loaded.ticket == PrintJobTicket(copies=2) and loaded.documents_done == {1}
    assert loaded.printing_document == 2 and loaded.impressions_completed == 3
    assert again.seen(8) and again.finished_state(8) is JobState.COMPLETED
    again.close()


async def test_restart_mid_print_aborts_and_queued_jobs_print(tmp_path: Path) -> None:
    async with running_stack(tmp_path) as stack:
        options = {"pages_per_second": 4}
        manager = await stack.add_manager("journaled", driver="simulated", options=options)
        first = (await stack.submit(pdf_bytes(pages=40, size=100), {}, service="journaled")).json()
        second = (await stack.submit(pdf_bytes(pages=1, size=100), {}, service="journaled")).json()
        await stack.wait_job(first["id"], lambda j: j["impressions_completed"] > 0, timeout=20)
        await stack.wait_job(second["id"], lambda j: "job-queued" in j["state_reasons"], timeout=20)
        # Stop mid-print: the journal keeps both jobs (one printing, one queued).
        await stack.stop_manager("journaled")
        assert manager is not None

        await stack.add_manager("journaled", driver="simulated", options=options)  # same state dir
        cut = await stack.wait_job(first["id"], timeout=30)
        assert cut["state"] == "aborted", cut
        assert "restarted while printing" in (cut["state_message"] or "")
        assert cut["impressions_completed"] > 0
        done = await stack.wait_job(second["id"], timeout=30)
        assert done["state"] == "completed", done
        printed = (stack.output_dir("journaled") / "printed.log").read_text().split()
        assert printed.count(str(second["id"])) == 1 and str(first["id"]) not in printed
        # A later job still goes through, and the recovered ones are not fetched again.
        third = (await stack.submit(pdf_bytes(pages=1, size=10), {}, service="journaled")).json()
        assert (await stack.wait_job(third["id"]))["state"] == "completed"
        await asyncio.sleep(0.2)
        printed = (stack.output_dir("journaled") / "printed.log").read_text().split()
        assert sorted(printed) == sorted([str(second["id"]), str(third["id"])])


def test_reads_a_journal_row_as_written_before_the_transition_methods(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    JournalJobBook(path).close()
    row = ('{"version": 3, "state": "processing", "reasons": ["job-printing"], "phase": "printing", '
           '"service": "office", "kind": "print", "ticket": {"copies": 2}, "destination_statuses": [], '
           '"document_count": 2, "documents": {}, "impressions_completed": 4, "claimed": true, '
           '"cancel_requested": false, "documents_done": [1], "printing_document": null, "message": null, '
           '"created_at": 1.0}')
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO jobs (job_id, data, updated) VALUES (9, ?, 1.0)", (row,))
    book = JournalJobBook(path)
    [record] = book.load()
    assert record.phase is Phase.PRINTING and record.documents_done == {1} and record.claimed
    record.resume()  # between documents: back to the queue, document 2 next
    record.start_work()
    record.start_document(2)
    book.save(record)
    book.close()
    [again] = JournalJobBook(path).load()
    assert again.printing_document == 2 and again.ticket == PrintJobTicket(copies=2)

"""Page thumbnails: drawn right, in a worker process, never by PDFium in the service's own threads.

PDFium is not thread-safe. Drawn in the service's threads, thumbnails asked for at once (the
console asks for every page of a scan together) failed to load ("Data format error", "Failed to
load page") or came out as another page's picture. These tests draw them in a worker pool, ask
for many at once through the real entry point, and check that the service process itself never
maps PDFium.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import time
from pathlib import Path

import httpx
import img2pdf
from PIL import Image

from cloud_service.transform import thumbnail
from cloud_service.transform.service import Transformer
from tests.support.upprocess import up_process

#: Page sizes in points (width, height), each with its own colour, so a page drawn in place of
#: another shows: a wide one, a tall one (its height capped at twice the width), a square one.
PAGES = [((400, 200), "red"), ((100, 300), "green"), ((300, 300), "blue")]
#: The thumbnail's (width, height) for each, and the colour in its middle.
EXPECTED = [((160, 80), (255, 0, 0)), ((107, 320), (0, 128, 0)), ((160, 160), (0, 0, 255))]


def _pdf() -> bytes:
    """A PDF of ``PAGES``, one flat image a page, its size in points (img2pdf at 72 dpi)."""
    images = []
    for (width, height), colour in PAGES:
        out = io.BytesIO()
        Image.new("RGB", (width, height), colour).save(out, format="PNG", dpi=(72, 72))
        images.append(out.getvalue())
    return img2pdf.convert(images)


def _looks(png: bytes) -> tuple[tuple[int, int], tuple[int, int, int]]:
    image = Image.open(io.BytesIO(png)).convert("RGB")
    return image.size, image.getpixel((image.width // 2, image.height // 2))


def test_render_draws_each_page_its_own_size_and_counts_them() -> None:
    data = _pdf()
    for number, expected in enumerate(EXPECTED, start=1):
        made = thumbnail.render(data, number)
        assert made.error is None and made.pages == len(PAGES)
        assert _looks(made.png) == expected, number
    past = thumbnail.render(data, len(PAGES) + 1)
    assert past == thumbnail.Thumbnail(None, len(PAGES))


def test_render_says_why_a_document_cannot_be_drawn() -> None:
    for data in (b"this is not a PDF", _pdf()[:200]):
        made = thumbnail.render(data, 1)
        assert made.png is None and made.pages == 0
        assert made.error and "Failed to load document" in made.error


async def test_the_worker_pool_draws_pages_asked_for_at_once() -> None:
    data = _pdf()
    pool = Transformer(workers=2, timeout=60.0)
    try:
        asked = [n for _ in range(4) for n in range(1, len(PAGES) + 1)]
        made = await asyncio.gather(*(pool.thumbnail(data, n) for n in asked))
        assert [(m.error, m.pages) for m in made] == [(None, len(PAGES))] * len(asked)
        assert [_looks(m.png) for m in made] == [EXPECTED[n - 1] for n in asked]
    finally:
        await asyncio.to_thread(pool.close)


async def test_a_page_that_takes_too_long_is_refused_and_the_next_one_drawn() -> None:
    data = _pdf()
    pool = Transformer(workers=1, timeout=0.001)  # less than starting a worker process takes
    try:
        late = await pool.thumbnail(data, 1)
        assert late.png is None and "took longer than" in (late.error or "")
        pool.timeout = 60.0
        made = await pool.thumbnail(data, 2)  # a new worker: the timed-out one was killed
        assert made.error is None and _looks(made.png) == EXPECTED[1]
    finally:
        await asyncio.to_thread(pool.close)


async def test_a_worker_that_dies_is_an_answer_and_the_next_page_gets_a_new_one() -> None:
    """As when a hostile PDF crashes PDFium: the worker is killed between two pages."""
    data = _pdf()
    pool = Transformer(workers=1, timeout=60.0)
    try:
        assert (await pool.thumbnail(data, 1)).error is None
        [worker] = list(pool._pool._processes.values())  # the one worker, started by that page
        os.kill(worker.pid, signal.SIGKILL)
        await asyncio.to_thread(worker.join, 20)
        crashed = await pool.thumbnail(data, 2)
        assert crashed.png is None and crashed.error == "the document crashed the renderer"
        made = await pool.thumbnail(data, 3)
        assert made.error is None and _looks(made.png) == EXPECTED[2]
    finally:
        await asyncio.to_thread(pool.close)


def _maps_pdfium(pid: int) -> bool:
    return "pdfium" in Path(f"/proc/{pid}/maps").read_text()


async def test_the_service_draws_a_scans_thumbnails_at_once_outside_its_own_process(tmp_path: Path) -> None:
    """Through ``cloudimaging up``: a 6-page PDF scan from the simulated scanner's feeder, every
    page's thumbnail asked for three times at once; all drawn right, and PDFium never loaded into
    the service's process (before, it was, and drew in the service's threads)."""
    async with up_process(tmp_path) as up:
        async with httpx.AsyncClient(base_url=up.url, verify=str(up.ca), timeout=60.0,
                                     headers={"Authorization": f"Bearer {up.token}"}) as http:
            ticket = {"input-source": "adf", "input-sides": "two-sided-long-edge", "input-resolution": 75,
                      "document-format": "application/pdf"}
            job = None
            deadline = time.monotonic() + 60
            while job is None:  # the simulated scanner's Manager may still be connecting
                made = await http.post("/api/v1/jobs", json={"kind": "scan", "service": "sim-scanner",
                                                             "ticket": ticket})
                if made.status_code == 201:
                    job = made.json()
                else:
                    assert time.monotonic() < deadline, made.text
                    await asyncio.sleep(0.2)
            state = ""
            while state != "completed":
                assert time.monotonic() < deadline, f"the scan job is {state}"
                await asyncio.sleep(0.1)
                state = (await http.get(f"/api/v1/jobs/{job['id']}")).json()["state"]
            url = f"/api/v1/jobs/{job['id']}/documents/1/pages/{{}}/thumbnail"
            first = await http.get(url.format(1))
            assert first.status_code == 200, first.text
            pages = int(first.headers["x-page-count"])
            assert pages == 6
            asked = [n for _ in range(3) for n in range(1, pages + 1)]
            answers = await asyncio.gather(*(http.get(url.format(n)) for n in asked))
            assert [a.status_code for a in answers] == [200] * len(asked), [a.text for a in answers]
            drawn: dict[int, set[bytes]] = {}
            for n, answer in zip(asked, answers, strict=True):
                assert Image.open(io.BytesIO(answer.content)).width == thumbnail.WIDTH
                drawn.setdefault(n, set()).add(answer.content)
            assert all(len(pictures) == 1 for pictures in drawn.values()), "a page drawn two ways"
            assert first.content in drawn[1]
            assert (await http.get(url.format(pages + 1))).status_code == 404
        assert not _maps_pdfium(up.process.pid), "PDFium is loaded in the service's own process"

"""Simulated scanner and modem configurations and the requests the scan and fax tests make."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from tests.support.stack import Stack

FAX_CAPS = {
    "printer-resolution-supported": [[204, 98], [204, 196]],
    "printer-resolution-default": [204, 98],
    "number-of-retries-supported": [0, 3],
    "number-of-retries-default": 1,
    "retry-interval-supported": [0, 60],
    "retry-interval-default": 0,
    "destination-uris-max": 3,
}


BUSY = "tel:+15555550100"
SILENT = "tel:+15555550199"


def modem(tmp: Path, name: str = "fax1", **options: object) -> dict:
    return {"kind": "faxout", "name": name, "driver": "simulated-modem",
            "driver_options": {"output_dir": str(tmp / "faxes"), "seconds_per_page": 0.05,
                               "busy": [BUSY], "no_answer": [SILENT], **options},
            "capabilities": FAX_CAPS}


def png_page() -> bytes:
    image = Image.new("RGB", (850, 1100), "white")
    for x in range(100, 700, 50):
        image.paste((0, 0, 0), (x, 100, x + 20, 1000))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


async def submit(stack: Stack, ticket: dict, data: bytes | None = None, fmt: str = "image/png") -> dict:
    import orjson

    response = await stack.http.post("/api/v1/jobs", files={
        "job": (None, orjson.dumps({"kind": "faxout", "service": "fax1", "ticket": ticket,
                                    "document_format": fmt}), "application/json"),
        "document": ("page" + (".png" if fmt == "image/png" else ".txt"), data or png_page(), fmt)})
    assert response.status_code == 201, response.text
    return response.json()


def dests(*uris: str) -> list[dict]:
    return [{"destination-uri": uri} for uri in uris]


SCAN_CAPS = {
    "input-source-supported": ["platen", "adf"],
    "input-source-default": "platen",
    "input-sides-supported": ["one-sided", "two-sided-long-edge"],
    "input-resolution-supported": [75, 100, 150],
    "input-resolution-default": 100,
    "input-color-mode-supported": ["color", "monochrome", "bi-level"],
    "input-media-supported": ["iso_a4_210x297mm", "na_letter_8.5x11in"],
    "input-media-default": "iso_a4_210x297mm",
}


def scanner(name: str = "scan1", **options: object) -> dict:
    return {"kind": "scan", "name": name, "driver": "simulated-scanner",
            "driver_options": {"pages_per_second": 50, "adf_sheets": 2, **options},
            "capabilities": SCAN_CAPS, "make_and_model": "test scanner"}


async def scan(stack: Stack, ticket: dict, service: str | None = "scan1") -> dict:
    response = await stack.http.post("/api/v1/jobs", json={"kind": "scan", "service": service, "ticket": ticket})
    assert response.status_code == 201, response.text
    return response.json()


async def download(stack: Stack, job_id: int, number: int) -> bytes:
    response = await stack.http.get(f"/api/v1/jobs/{job_id}/documents/{number}")
    assert response.status_code == 200, response.text
    return response.content

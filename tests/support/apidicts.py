"""Plain API objects (ServiceInfo and JobInfo as JSON dicts) for tests of pure formatting.

Tests that talk to the service use the real one (tests/support/live.py); these builders are
only for code that turns a model into text, where a fixed value makes the expected output
exact.
"""

from __future__ import annotations

from typing import Any

from schemas.tickets import PrintCapabilities

CAPS = PrintCapabilities(
    sides_supported=["one-sided", "two-sided-long-edge"],
    media_supported=["iso_a4_210x297mm", "na_letter_8.5x11in"],
    print_color_mode_supported=["monochrome", "color"],
    print_quality_supported=[3, 4, 5],
    page_ranges_supported=True,
    number_up_supported=[1, 2],
    finishings_supported=[3, 4, 5],
    document_format_supported=["application/pdf", "text/plain", "image/png"],
)


def service_dict(name: str = "office", **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "kind": "print",
        "name": name,
        "device_id": f"dev-{name}",
        "state": "idle",
        "state_reasons": [],
        "state_message": None,
        "info": f"{name} printer",
        "location": "2nd floor",
        "make_and_model": "Acme LaserWriter 9000",
        "online": True,
        "last_seen": 1_700_000_000.0,
        "queued_jobs": 0,
        "capabilities": CAPS.wire(),
        "ipp_uri": None,
    }
    data.update(overrides)
    return data


def job_dict(job_id: int, service: str = "office", **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": job_id,
        "uuid": f"urn:uuid:00000000-0000-0000-0000-{job_id:012d}",
        "kind": "print",
        "service": service,
        "device_id": f"dev-{service}",
        "owner": "alice",
        "state": "pending",
        "state_reasons": ["job-queued"],
        "state_message": None,
        "version": 1,
        "created_at": 1_700_000_000.0,
        "updated_at": 1_700_000_000.0,
        "completed_at": None,
        "impressions_completed": 0,
        "ticket": {},
        "documents": [
            {
                "number": 1,
                "name": "doc.pdf",
                "format": "application/pdf",
                "size": 2048,
                "sha256": None,
                "state": "pending",
                "impressions_completed": 0,
            }
        ],
        "history": [],
        "upload_url": None,
    }
    data.update(overrides)
    return data

"""The offline overlays of schemas.model.service: what clients see of services and jobs."""

from __future__ import annotations

import calendar

from schemas.enums import JobState, ServiceState
from schemas.model.service import job_overlay, service_overlay


def test_service_overlay_from_stored_columns() -> None:
    away = service_overlay("idle", ["none"], None, online=False)
    assert away.state is ServiceState.STOPPED and away.reasons == ("offline-report",)
    assert away.message == "the device is not connected"
    back = service_overlay("processing", ["offline-report", "media-low-report"], "busy", online=True)
    assert (back.state, back.reasons, back.message) == (ServiceState.PROCESSING, ("media-low-report",), "busy")


def test_pending_job_of_an_offline_device_says_so() -> None:
    seen = calendar.timegm((2026, 11, 24, 10, 0, 0))
    reasons, message = job_overlay(JobState.PENDING.value, ["none"], None, device_online=False, last_seen=seen)
    assert reasons == ["printer-stopped"]
    assert message == "waiting: the printer is offline (last seen 2026-11-24 10:00:00 UTC)"
    reasons, message = job_overlay("pending", ["job-fetchable"], "queued", device_online=False, last_seen=None)
    assert (reasons, message) == (["job-fetchable", "printer-stopped"], "queued")
    assert job_overlay("pending", [], None, False, None)[1] == "waiting: the printer is offline"


def test_other_jobs_are_shown_as_stored() -> None:
    assert job_overlay("pending", ["none"], None, device_online=True, last_seen=1.0) == (["none"], None)
    assert job_overlay("processing", ["none"], "m", device_online=False, last_seen=1.0) == (["none"], "m")

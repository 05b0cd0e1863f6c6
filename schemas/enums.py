"""States and reasons of PWG 5108.01 / IPP, as wire values.

Values are the IPP keyword spellings so a reader who knows RFC 8011 and PWG 5100.18
recognises them; the numeric IPP enum is kept alongside for the IPP front.
"""

from __future__ import annotations

from enum import StrEnum


class ServiceKind(StrEnum):
    """The three Cloud Imaging services of the model (printer-service-type of PWG 5100.22)."""

    PRINT = "print"
    SCAN = "scan"
    FAXOUT = "faxout"


class ServiceState(StrEnum):
    """PWG 5108.01 service states as IPP printer-state keywords."""

    IDLE = "idle"
    PROCESSING = "processing"
    STOPPED = "stopped"

    @property
    def ipp(self) -> int:
        return {"idle": 3, "processing": 4, "stopped": 5}[self.value]


class JobState(StrEnum):
    """PWG 5108.01 / RFC 8011 job states."""

    PENDING = "pending"
    PENDING_HELD = "pending-held"
    PROCESSING = "processing"
    PROCESSING_STOPPED = "processing-stopped"
    CANCELED = "canceled"
    ABORTED = "aborted"
    COMPLETED = "completed"

    @property
    def ipp(self) -> int:
        return _JOB_IPP[self]

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_JOB_STATES


_JOB_IPP = {
    JobState.PENDING: 3,
    JobState.PENDING_HELD: 4,
    JobState.PROCESSING: 5,
    JobState.PROCESSING_STOPPED: 6,
    JobState.CANCELED: 7,
    JobState.ABORTED: 8,
    JobState.COMPLETED: 9,
}

TERMINAL_JOB_STATES = frozenset({JobState.CANCELED, JobState.ABORTED, JobState.COMPLETED})


class DocumentState(StrEnum):
    """Document states (PWG 5100.5 plus INFRA's processing-stopped)."""

    PENDING = "pending"
    PROCESSING = "processing"
    PROCESSING_STOPPED = "processing-stopped"
    CANCELED = "canceled"
    ABORTED = "aborted"
    COMPLETED = "completed"

    @property
    def terminal(self) -> bool:
        return self in (DocumentState.CANCELED, DocumentState.ABORTED, DocumentState.COMPLETED)


class Reason:
    """job-state-reasons, printer-state-reasons and document-state-reasons keywords used here.

    Plain string constants (not an enum): reasons are open-ended in IPP and devices may send
    keywords we do not know; they are validated as keywords, not against this list.
    """

    NONE = "none"
    # job-state-reasons (RFC 8011 5.3.8, PWG 5100.18)
    JOB_INCOMING = "job-incoming"
    JOB_FETCHABLE = "job-fetchable"
    JOB_HOLD_UNTIL_SPECIFIED = "job-hold-until-specified"
    JOB_QUEUED = "job-queued"
    JOB_PRINTING = "job-printing"
    JOB_COMPLETED_SUCCESSFULLY = "job-completed-successfully"
    JOB_CANCELED_BY_USER = "job-canceled-by-user"
    JOB_CANCELED_AT_DEVICE = "job-canceled-at-device"
    ABORTED_BY_SYSTEM = "aborted-by-system"
    PROCESSING_TO_STOP_POINT = "processing-to-stop-point"
    PRINTER_STOPPED = "printer-stopped"
    UNSUPPORTED_DOCUMENT_FORMAT = "unsupported-document-format"
    UNSUPPORTED_ATTRIBUTES = "unsupported-attributes-or-values"
    DOCUMENT_ACCESS_ERROR = "document-access-error"
    DOCUMENT_FORMAT_ERROR = "document-format-error"
    DOCUMENT_UNPRINTABLE_ERROR = "document-unprintable-error"
    # printer-state-reasons
    OFFLINE = "offline-report"
    MEDIA_EMPTY = "media-empty"
    MEDIA_JAM = "media-jam"
    IDENTIFY_PRINTER_REQUESTED = "identify-printer-requested"

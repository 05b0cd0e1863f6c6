"""What a document's bytes are (content sniffing), judged against the format it was labelled with.

Pure and incremental like schemas.model.pages: ``FormatSniffer.feed`` takes the bytes as they
stream in, so the judgement costs no second read. The rules (docs/formats.md):

- an executable (ELF, PE/MZ, Mach-O, a ``#!`` script) is refused whatever its label;
- a label the bytes contradict (``application/pdf`` that is not a PDF, ``image/jpeg`` whose
  bytes are a PNG, ``text/plain`` that is not UTF-8 text, ...) is refused;
- ``application/octet-stream`` is relabelled with the format the bytes show; bytes that show
  no format we know are refused (an unknown binary is not a print job);
- a label we cannot check (PostScript, PCL, ...) is taken as sent unless the bytes are a
  format we do know.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

OCTET_STREAM = "application/octet-stream"
TEXT = "text/plain"
EXECUTABLE = "executable"

#: How many leading bytes decide a binary format (PDF allows junk before ``%PDF-``).
HEAD = 1024

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"RaS2", "image/pwg-raster"),
    (b"UNIRAST\x00", "image/urf"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
    (b"%!", "application/postscript"),
    (b"\x1b%-12345X", "application/vnd.hp-pcl"),
    (b"\x1bE", "application/vnd.hp-pcl"),
    (b"\x7fELF", EXECUTABLE),
    (b"MZ", EXECUTABLE),
    (b"\xca\xfe\xba\xbe", EXECUTABLE),
    (b"\xfe\xed\xfa\xce", EXECUTABLE),
    (b"\xfe\xed\xfa\xcf", EXECUTABLE),
    (b"\xce\xfa\xed\xfe", EXECUTABLE),
    (b"\xcf\xfa\xed\xfe", EXECUTABLE),
    (b"#!", EXECUTABLE),
)
#: Control characters text may hold: tab, newline, form feed, carriage return, escape-free.
_TEXT_CONTROLS = frozenset(b"\t\n\x0c\r")
_BAD_TEXT = bytes(c for c in range(32) if c not in _TEXT_CONTROLS) + b"\x7f"


def sniff(head: bytes) -> str | None:
    """The format the first bytes of a document show, ``EXECUTABLE``, or None if unknown."""
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            return fmt
    if b"%PDF-" in head[:HEAD]:
        return "application/pdf"
    return None


class FormatError(ValueError):
    """The bytes are not what their label says, or are not a document at all."""


@dataclass
class Verdict:
    """The format to store the document as (the label, or what octet-stream turned out to be)."""

    document_format: str


class FormatSniffer:
    """Checks a document's bytes against its label while they stream; ``result()`` at the end."""

    def __init__(self, label: str) -> None:
        self.label = label.lower()
        self._head = b""
        self._decided: str | None = None
        self._text = self.label.startswith("text/plain")
        self._utf8 = codecs.getincrementaldecoder("utf-8")("strict")
        self._text_ok = True

    @property
    def known_format(self) -> str | None:
        """The format the document is, once its first bytes decided it (None before)."""
        if self._decided is None:
            return None
        if self.label == OCTET_STREAM:
            return self._decided or (TEXT if self._looks_like_text() else OCTET_STREAM)
        return self.label

    def _looks_like_text(self) -> bool:
        return bool(self._head) and self._head.translate(None, _BAD_TEXT) == self._head and _utf8_prefix(self._head)

    def feed(self, chunk: bytes) -> None:
        """Raises FormatError as soon as the bytes contradict the label."""
        if not chunk:
            return
        if self._decided is None:
            self._head += chunk[: HEAD - len(self._head)]
            if len(self._head) >= HEAD or (self._head and self._decidable()):
                self._decide()
        if self._text and self._text_ok:
            try:
                self._utf8.decode(chunk)
            except UnicodeDecodeError:
                self._text_ok = False
            if chunk.translate(None, _BAD_TEXT) != chunk:
                self._text_ok = False
            if not self._text_ok:
                raise FormatError("the document is labelled text/plain but is not UTF-8 text")

    def _decidable(self) -> bool:
        """A magic number matched already (no need to wait for the whole head)."""
        return any(self._head.startswith(magic) for magic, _ in _MAGIC) or b"%PDF-" in self._head

    def _decide(self) -> None:
        found = sniff(self._head)
        self._decided = found or ""
        if found == EXECUTABLE:
            raise FormatError("the document is an executable program, not a printable document")
        if self.label == OCTET_STREAM or self._text:
            return  # octet-stream is settled at the end; text is checked as it streams
        if found is not None and found != self.label:
            raise FormatError(f"the document is labelled {self.label} but its content is {found}")
        if found is None and self.label in _CHECKED:
            raise FormatError(f"the document is labelled {self.label} but its content is not {self.label}")

    def result(self) -> Verdict:
        """The format to store, once every byte was fed (FormatError if it cannot be taken)."""
        if self._decided is None:
            self._decide()
        if self._text:
            try:
                self._utf8.decode(b"", final=True)
            except UnicodeDecodeError:
                raise FormatError("the document is labelled text/plain but is not UTF-8 text") from None
            return Verdict(self.label)
        if self.label == OCTET_STREAM:
            if self._decided:
                return Verdict(self._decided)
            if self._looks_like_text():
                return Verdict(TEXT)
            raise FormatError("the document's content is not a format this service knows "
                              "(send it with its real document-format)")
        return Verdict(self.label)


#: Labels whose bytes always show them: such a label with other bytes is refused.
_CHECKED = frozenset({"application/pdf", "image/png", "image/jpeg", "image/pwg-raster", "image/urf", "image/tiff"})


def _utf8_prefix(head: bytes) -> bool:
    """``head`` is UTF-8, allowing a character cut at its end."""
    try:
        codecs.getincrementaldecoder("utf-8")("strict").decode(head)
    except UnicodeDecodeError:
        return False
    return True

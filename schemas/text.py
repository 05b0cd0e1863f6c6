"""Text and keyword types with the checks of RFC 5198 and IPP.

Every text that crosses a trust boundary (job names, messages, reasons) goes through these:
valid UTF-8 (msgpack/JSON decoding enforces it), no C0/C1 control characters, no DEL, no
U+2028/U+2029, bounded length. A bad value is refused with the attribute named, never
stored or logged raw.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated

from pydantic import AfterValidator, Field, TypeAdapter, ValidationError

_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_KEYWORD = re.compile(r"^[a-z][a-z0-9._-]{0,254}$")
_MIME = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")


def check_text(value: str) -> str:
    """Refuse control characters; normalise to NFC (RFC 5198)."""
    bad = _FORBIDDEN.search(value)
    if bad:
        raise ValueError(f"control character U+{ord(bad.group()):04X} not allowed in text")
    return unicodedata.normalize("NFC", value)


def is_keyword(value: str) -> bool:
    """True for an IPP keyword (lowercase, digits, '.', '_', '-')."""
    return bool(_KEYWORD.match(value))


def check_keyword(value: str) -> str:
    if not _KEYWORD.match(value):
        raise ValueError("not an IPP keyword (lowercase letters, digits, '-', '_', '.')")
    return value


def check_mime(value: str) -> str:
    value = value.lower()
    if not _MIME.match(value):
        raise ValueError("not a MIME media type such as application/pdf")
    return value


#: IPP name (RFC 8011 5.1.3): at most 255 octets of text.
Name = Annotated[str, Field(max_length=255), AfterValidator(check_text)]
#: IPP text (RFC 8011 5.1.2): at most 1023 octets.
Text = Annotated[str, Field(max_length=1023), AfterValidator(check_text)]
Keyword = Annotated[str, AfterValidator(check_keyword)]
MimeType = Annotated[str, AfterValidator(check_mime)]

_NAME: TypeAdapter[str] = TypeAdapter(Name)


def check_name(value: str) -> str:
    """``value`` as a ``Name`` (NFC), or ValueError with the reason.

    For names that reach the service outside a model (a multipart filename, an IPP
    ``document-name``): the same validator as the wire's ``Name``, so a name accepted at an
    edge is always one a device message can carry.
    """
    try:
        return _NAME.validate_python(value)
    except ValidationError as exc:
        raise ValueError(exc.errors()[0]["msg"]) from None

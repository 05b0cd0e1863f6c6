"""A compact RFC 8010 codec: IPP messages to and from bytes, for both edges.

Written here because no maintained Python library encodes *and* decodes requests and
responses with collections (pyipp is a monitoring client that decodes responses only;
pkipplib is unmaintained). The model is deliberately plain:

- ``Message(version, code, request_id, groups)``: ``code`` is the operation-id in a request
  and the status-code in a response;
- ``Group(tag, attributes)``: attributes in order, by name (a name appears once per group);
- ``Attribute(name, tag, values)``: ``values`` are Python values whose type follows the tag:
  int (integer, enum), bool, str (text, name, keyword, uri, charset, mimeMediaType...),
  bytes (octetString and unknown tags), datetime, ``Resolution``, ``Range``, ``LangString``
  (textWithLanguage, nameWithLanguage), dict[str, Attribute] (collections) and ``None``
  for the out-of-band tags (no-value, unknown, unsupported).

``decode`` is strict (bounded lengths, no trailing garbage in the attribute section) and
raises ``IppParseError``; it raises ``IppIncomplete`` when more bytes are needed, so a
server can feed it a growing prefix of a request body and stream the rest (the document).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from enum import IntEnum
from typing import Any, NamedTuple


class IppParseError(ValueError):
    """The bytes are not a well-formed IPP message."""


class IppIncomplete(IppParseError):
    """The bytes end before the end-of-attributes tag: feed more."""


class Tag(IntEnum):
    """Delimiter and value tags (RFC 8010 3.5)."""

    # delimiters (groups)
    OPERATION = 0x01
    JOB = 0x02
    END = 0x03
    PRINTER = 0x04
    UNSUPPORTED_GROUP = 0x05
    SUBSCRIPTION = 0x06
    EVENT_NOTIFICATION = 0x07
    RESOURCE = 0x08
    DOCUMENT = 0x09
    SYSTEM = 0x0A
    # out-of-band values
    UNSUPPORTED_VALUE = 0x10
    DEFAULT = 0x11
    UNKNOWN = 0x12
    NO_VALUE = 0x13
    NOT_SETTABLE = 0x15
    DELETE_ATTRIBUTE = 0x16
    ADMIN_DEFINE = 0x17
    # integers
    INTEGER = 0x21
    BOOLEAN = 0x22
    ENUM = 0x23
    # octet strings
    OCTET_STRING = 0x30
    DATETIME = 0x31
    RESOLUTION = 0x32
    RANGE = 0x33
    BEGIN_COLLECTION = 0x34
    TEXT_LANG = 0x35
    NAME_LANG = 0x36
    END_COLLECTION = 0x37
    # character strings
    TEXT = 0x41
    NAME = 0x42
    KEYWORD = 0x44
    URI = 0x45
    URI_SCHEME = 0x46
    CHARSET = 0x47
    LANGUAGE = 0x48
    MIME_TYPE = 0x49
    MEMBER_NAME = 0x4A
    EXTENSION = 0x7F


class Op(IntEnum):
    """Operation ids used here (RFC 8011, PWG 5100.13)."""

    PRINT_JOB = 0x0002
    PRINT_URI = 0x0003
    VALIDATE_JOB = 0x0004
    CREATE_JOB = 0x0005
    SEND_DOCUMENT = 0x0006
    SEND_URI = 0x0007
    CANCEL_JOB = 0x0008
    GET_JOB_ATTRIBUTES = 0x0009
    GET_JOBS = 0x000A
    GET_PRINTER_ATTRIBUTES = 0x000B
    CANCEL_MY_JOBS = 0x0039
    CLOSE_JOB = 0x003B
    IDENTIFY_PRINTER = 0x003C


class Status(IntEnum):
    """Status codes used here (RFC 8011 B, PWG 5100.x)."""

    OK = 0x0000
    OK_IGNORED_OR_SUBSTITUTED = 0x0001
    OK_CONFLICTING = 0x0002
    CLIENT_ERROR_BAD_REQUEST = 0x0400
    CLIENT_ERROR_FORBIDDEN = 0x0401
    CLIENT_ERROR_NOT_AUTHENTICATED = 0x0402
    CLIENT_ERROR_NOT_AUTHORIZED = 0x0403
    CLIENT_ERROR_NOT_POSSIBLE = 0x0404
    CLIENT_ERROR_TIMEOUT = 0x0405
    CLIENT_ERROR_NOT_FOUND = 0x0406
    CLIENT_ERROR_GONE = 0x0407
    CLIENT_ERROR_REQUEST_ENTITY_TOO_LARGE = 0x0408
    CLIENT_ERROR_REQUEST_VALUE_TOO_LONG = 0x0409
    CLIENT_ERROR_DOCUMENT_FORMAT_NOT_SUPPORTED = 0x040A
    CLIENT_ERROR_ATTRIBUTES_OR_VALUES_NOT_SUPPORTED = 0x040B
    CLIENT_ERROR_URI_SCHEME_NOT_SUPPORTED = 0x040C
    CLIENT_ERROR_CHARSET_NOT_SUPPORTED = 0x040D
    CLIENT_ERROR_CONFLICTING_ATTRIBUTES = 0x040E
    CLIENT_ERROR_COMPRESSION_NOT_SUPPORTED = 0x040F
    CLIENT_ERROR_COMPRESSION_ERROR = 0x0410
    CLIENT_ERROR_DOCUMENT_FORMAT_ERROR = 0x0411
    CLIENT_ERROR_DOCUMENT_ACCESS_ERROR = 0x0412
    CLIENT_ERROR_DOCUMENT_UNPRINTABLE_ERROR = 0x041B
    SERVER_ERROR_INTERNAL_ERROR = 0x0500
    SERVER_ERROR_OPERATION_NOT_SUPPORTED = 0x0501
    SERVER_ERROR_SERVICE_UNAVAILABLE = 0x0502
    SERVER_ERROR_VERSION_NOT_SUPPORTED = 0x0503
    SERVER_ERROR_DEVICE_ERROR = 0x0504
    SERVER_ERROR_TEMPORARY_ERROR = 0x0505
    SERVER_ERROR_NOT_ACCEPTING_JOBS = 0x0506
    SERVER_ERROR_BUSY = 0x0507
    SERVER_ERROR_JOB_CANCELED = 0x0508
    SERVER_ERROR_MULTIPLE_DOCUMENT_JOBS_NOT_SUPPORTED = 0x0509

    @property
    def keyword(self) -> str:
        return self.name.lower().replace("_", "-")

    @property
    def successful(self) -> bool:
        return self.value < 0x0100


class Resolution(NamedTuple):
    x: int
    y: int
    #: 3 = dots per inch, 4 = dots per centimetre
    units: int = 3


class Range(NamedTuple):
    lower: int
    upper: int


class LangString(NamedTuple):
    """textWithLanguage / nameWithLanguage."""

    text: str
    language: str


Collection = dict[str, "Attribute"]

#: Tags whose values are UTF-8 / US-ASCII strings.
STRING_TAGS = frozenset({Tag.TEXT, Tag.NAME, Tag.KEYWORD, Tag.URI, Tag.URI_SCHEME, Tag.CHARSET,
                         Tag.LANGUAGE, Tag.MIME_TYPE, Tag.MEMBER_NAME})
OUT_OF_BAND = frozenset(range(0x10, 0x20))
#: Bounds that keep a hostile request from making us allocate much.
MAX_VALUE_LENGTH = 32767
MAX_COLLECTION_DEPTH = 8


@dataclass
class Attribute:
    """One attribute: a name, the tag of its values and the values in order.

    ``tags`` is set only when values have different tags (e.g. keyword and name in one
    1setOf); then it gives each value's tag.
    """

    name: str
    tag: int
    values: list[Any]
    tags: list[int] | None = None

    @property
    def value(self) -> Any:
        """The first value (most attributes are single-valued)."""
        return self.values[0] if self.values else None

    def value_tag(self, index: int) -> int:
        return self.tags[index] if self.tags else self.tag


@dataclass
class Group:
    tag: int
    attributes: dict[str, Attribute] = field(default_factory=dict)

    def add(self, name: str, tag: int, values: Any) -> Attribute:
        """Add (or replace) an attribute; a non-list value becomes a one-value list."""
        vals = list(values) if isinstance(values, list | tuple) and not _is_struct(values) else [values]
        attr = Attribute(name, int(tag), vals)
        self.attributes[name] = attr
        return attr

    def get(self, name: str) -> Attribute | None:
        return self.attributes.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self.attributes


def _is_struct(value: Any) -> bool:
    return isinstance(value, Resolution | Range | LangString)


@dataclass
class Message:
    version: tuple[int, int]
    code: int
    request_id: int
    groups: list[Group] = field(default_factory=list)

    def group(self, tag: int) -> Group | None:
        """The first group with ``tag``."""
        return next((g for g in self.groups if g.tag == tag), None)

    def groups_of(self, tag: int) -> list[Group]:
        return [g for g in self.groups if g.tag == tag]

    def new_group(self, tag: int) -> Group:
        group = Group(int(tag))
        self.groups.append(group)
        return group

    def operation(self) -> Group:
        """The operation attributes group, created first if absent."""
        group = self.group(Tag.OPERATION)
        if group is None:
            group = Group(Tag.OPERATION)
            self.groups.insert(0, group)
        return group

    def encode(self) -> bytes:
        return encode(self)


# ---------------------------------------------------------------------------- encoding


def encode(message: Message) -> bytes:
    out = bytearray(struct.pack(">BBHi", message.version[0], message.version[1], message.code,
                                message.request_id))
    for group in message.groups:
        out.append(group.tag)
        for attr in group.attributes.values():
            _encode_attribute(out, attr.name, attr)
    out.append(Tag.END)
    return bytes(out)


def _encode_attribute(out: bytearray, name: str, attr: Attribute) -> None:
    if not attr.values:
        raise ValueError(f"attribute {attr.name!r} has no values")
    for index, value in enumerate(attr.values):
        tag = attr.value_tag(index)
        _encode_value(out, name if index == 0 else "", tag, value)


def _encode_value(out: bytearray, name: str, tag: int, value: Any) -> None:
    raw_name = name.encode("utf-8")
    if tag == Tag.BEGIN_COLLECTION:
        _put(out, tag, raw_name, b"")
        for member_name, member in value.items():
            _put(out, Tag.MEMBER_NAME, b"", member_name.encode("utf-8"))
            for index, member_value in enumerate(member.values):
                _encode_value(out, "", member.value_tag(index), member_value)
        _put(out, Tag.END_COLLECTION, b"", b"")
        return
    _put(out, tag, raw_name, _value_bytes(tag, value))


def _put(out: bytearray, tag: int, name: bytes, value: bytes) -> None:
    if len(value) > 0xFFFF or len(name) > 0xFFFF:
        raise ValueError("IPP value or name longer than 65535 octets")
    out.append(tag)
    out += struct.pack(">H", len(name)) + name + struct.pack(">H", len(value)) + value


def _value_bytes(tag: int, value: Any) -> bytes:
    if tag in OUT_OF_BAND:
        return b""
    if tag in (Tag.INTEGER, Tag.ENUM):
        return struct.pack(">i", int(value))
    if tag == Tag.BOOLEAN:
        return b"\x01" if value else b"\x00"
    if tag == Tag.RANGE:
        return struct.pack(">ii", int(value[0]), int(value[1]))
    if tag == Tag.RESOLUTION:
        return struct.pack(">iib", int(value[0]), int(value[1]), int(value[2]))
    if tag == Tag.DATETIME:
        return _datetime_bytes(value)
    if tag in (Tag.TEXT_LANG, Tag.NAME_LANG):
        lang = value.language.encode("ascii")
        text = value.text.encode("utf-8")
        return struct.pack(">H", len(lang)) + lang + struct.pack(">H", len(text)) + text
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")


def _datetime_bytes(value: datetime) -> bytes:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    offset = value.utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    sign = b"+" if minutes >= 0 else b"-"
    minutes = abs(minutes)
    return struct.pack(">HBBBBBB", value.year, value.month, value.day, value.hour, value.minute, value.second,
                       value.microsecond // 100000) + sign + bytes([minutes // 60, minutes % 60])


# ---------------------------------------------------------------------------- decoding


def decode(data: bytes | bytearray | memoryview) -> tuple[Message, int]:
    """Parse the header and attribute groups; return the message and where data starts.

    Raises IppIncomplete if ``data`` ends before the end-of-attributes tag, IppParseError
    if it is malformed.
    """
    buf = memoryview(bytes(data))  # a copy: a view of the caller's bytearray would pin its size
    if len(buf) < 9:
        raise IppIncomplete("short header")
    major, minor, code, request_id = struct.unpack_from(">BBHi", buf, 0)
    message = Message((major, minor), code, request_id)
    pos = 8
    group: Group | None = None
    last: Attribute | None = None
    while True:
        tag = _byte(buf, pos)
        pos += 1
        if tag == Tag.END:
            return message, pos
        if tag < 0x10:
            if tag == 0x00:
                raise IppParseError("reserved delimiter tag 0x00")
            group = message.new_group(tag)
            last = None
            continue
        if group is None:
            raise IppParseError("attribute outside any group")
        if tag == Tag.EXTENSION:
            raise IppParseError("extension tags are not supported")
        name, pos = _string(buf, pos)
        if tag == Tag.BEGIN_COLLECTION:
            _, pos = _string(buf, pos)  # a begCollection value is empty
            value, pos = _collection(buf, pos, 1)
        elif tag in (Tag.END_COLLECTION, Tag.MEMBER_NAME):
            raise IppParseError(f"tag 0x{tag:02x} outside a collection")
        else:
            raw, pos = _string(buf, pos)
            value = _decode_value(tag, raw)
        if name:
            text_name = _name(name)
            if text_name in group.attributes:
                raise IppParseError(f"attribute {text_name!r} repeated in a group")
            last = Attribute(text_name, tag, [value])
            group.attributes[text_name] = last
        else:
            if last is None:
                raise IppParseError("additional value without an attribute")
            _append(last, tag, value)


def _append(attr: Attribute, tag: int, value: Any) -> None:
    if attr.tags is None and tag != attr.tag:
        attr.tags = [attr.tag] * len(attr.values)
    if attr.tags is not None:
        attr.tags.append(tag)
    attr.values.append(value)


def _collection(buf: memoryview, pos: int, depth: int) -> tuple[Collection, int]:
    if depth > MAX_COLLECTION_DEPTH:
        raise IppParseError("collections nested too deep")
    members: Collection = {}
    current: Attribute | None = None
    while True:
        tag = _byte(buf, pos)
        pos += 1
        _name_bytes, pos = _string(buf, pos)
        if tag == Tag.END_COLLECTION:
            _, pos = _string(buf, pos)
            return members, pos
        if tag == Tag.MEMBER_NAME:
            raw, pos = _string(buf, pos)
            member = _name(raw)
            current = Attribute(member, -1, [])
            members[member] = current
            continue
        if current is None or tag < 0x10:
            raise IppParseError("malformed collection")
        if tag == Tag.BEGIN_COLLECTION:
            _, pos = _string(buf, pos)
            value, pos = _collection(buf, pos, depth + 1)
        else:
            raw, pos = _string(buf, pos)
            value = _decode_value(tag, raw)
        if current.tag == -1:
            current.tag = tag
            current.values.append(value)
        else:
            _append(current, tag, value)


def _byte(buf: memoryview, pos: int) -> int:
    if pos >= len(buf):
        raise IppIncomplete("message ends early")
    return buf[pos]


def _string(buf: memoryview, pos: int) -> tuple[bytes, int]:
    if pos + 2 > len(buf):
        raise IppIncomplete("message ends early")
    (length,) = struct.unpack_from(">H", buf, pos)
    if length > MAX_VALUE_LENGTH:
        raise IppParseError("value too long")
    end = pos + 2 + length
    if end > len(buf):
        raise IppIncomplete("message ends early")
    return bytes(buf[pos + 2:end]), end


def _name(raw: bytes) -> str:
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise IppParseError("attribute names are US-ASCII") from None


def _decode_value(tag: int, raw: bytes) -> Any:
    try:
        if tag in OUT_OF_BAND:
            return None
        if tag in (Tag.INTEGER, Tag.ENUM):
            _need(raw, 4, tag)
            return struct.unpack(">i", raw)[0]
        if tag == Tag.BOOLEAN:
            _need(raw, 1, tag)
            return raw[0] != 0
        if tag == Tag.RANGE:
            _need(raw, 8, tag)
            return Range(*struct.unpack(">ii", raw))
        if tag == Tag.RESOLUTION:
            _need(raw, 9, tag)
            return Resolution(*struct.unpack(">iib", raw))
        if tag == Tag.DATETIME:
            _need(raw, 11, tag)
            return _datetime(raw)
        if tag in (Tag.TEXT_LANG, Tag.NAME_LANG):
            (lang_len,) = struct.unpack_from(">H", raw, 0)
            lang = raw[2:2 + lang_len].decode("ascii")
            (text_len,) = struct.unpack_from(">H", raw, 2 + lang_len)
            text = raw[4 + lang_len:4 + lang_len + text_len]
            if 4 + lang_len + text_len != len(raw):
                raise IppParseError("bad textWithLanguage length")
            return LangString(text.decode("utf-8"), lang)
        if tag in STRING_TAGS:
            return raw.decode("utf-8")
    except (struct.error, UnicodeDecodeError, ValueError) as exc:
        raise IppParseError(f"bad value for tag 0x{tag:02x}: {exc}") from None
    return raw


def _need(raw: bytes, size: int, tag: int) -> None:
    if len(raw) != size:
        raise IppParseError(f"tag 0x{tag:02x} needs {size} octets, got {len(raw)}")


def _datetime(raw: bytes) -> datetime:
    year, month, day, hour, minute, second, deci = struct.unpack(">HBBBBBB", raw[:8])
    sign = -1 if raw[8:9] == b"-" else 1
    offset = timezone(sign * timedelta(hours=raw[9], minutes=raw[10]))
    return datetime(year, month, day, hour, minute, min(second, 59), deci * 100000, tzinfo=offset)


# ---------------------------------------------------------------------------- helpers


def request(op: int, request_id: int = 1, version: tuple[int, int] = (2, 0), language: str = "en") -> Message:
    """A request with attributes-charset and attributes-natural-language in place."""
    message = Message(version, int(op), request_id)
    group = message.new_group(Tag.OPERATION)
    group.add("attributes-charset", Tag.CHARSET, "utf-8")
    group.add("attributes-natural-language", Tag.LANGUAGE, language)
    return message


def response(status: int, request_id: int, version: tuple[int, int] = (2, 0), message: str | None = None) -> Message:
    """A response with the two required operation attributes and an optional status-message."""
    out = Message(version, int(status), request_id)
    group = out.new_group(Tag.OPERATION)
    group.add("attributes-charset", Tag.CHARSET, "utf-8")
    group.add("attributes-natural-language", Tag.LANGUAGE, "en")
    if message:
        group.add("status-message", Tag.TEXT, message[:255])
    return out


def collection(**members: tuple[int, Any]) -> Collection:
    """Build a collection value: ``collection(x_dimension=(Tag.INTEGER, 21000))``."""
    out: Collection = {}
    for key, (tag, value) in members.items():
        name = key.replace("_", "-")
        vals = list(value) if isinstance(value, list) else [value]
        out[name] = Attribute(name, int(tag), vals)
    return out


def simple(attr: Attribute | None) -> Any:
    """The plain value(s) of an attribute: a scalar for one value, a list for several."""
    if attr is None:
        return None
    values = [_plain(v) for v in attr.values]
    return values[0] if len(values) == 1 else values


def _plain(value: Any) -> Any:
    if isinstance(value, LangString):
        return value.text
    if isinstance(value, dict):
        return {k: simple(v) for k, v in value.items()}
    return value

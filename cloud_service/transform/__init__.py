"""Document transforms: what the service turns into what, so every document prints on every
device (the model: "the Cloud Print Service may perform a Transform ... prior to placing the
Print Job in a list of available Jobs").

This module is the plan, pure and cheap (no rendering library is imported here): which inputs
the service reads, which outputs it writes, the output it picks for a device, and the formats
a print service advertises. The work runs in worker processes (cloud_service.transform.service)
with the readers pdf.py, image.py, text.py and the writers pwgraster.py, urf.py, output.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: Formats the service reads.
SOURCE_FORMATS = ("application/pdf", "image/jpeg", "image/png", "text/plain")
#: Formats the service writes, in the order it prefers them for a device: PDF keeps vectors and
#: text sharp; PWG raster is what every IPP Everywhere printer takes; URF is AirPrint's; JPEG
#: holds one page only.
OUTPUT_FORMATS = ("application/pdf", "image/pwg-raster", "image/urf", "image/jpeg")


def _base(fmt: str) -> str:
    return fmt.split(";", 1)[0].strip().lower()


def target_format(source: str, device_formats: Iterable[str]) -> str | None:
    """The format to give the device for a document in ``source``: None when the device takes
    ``source`` itself (no transform); ValueError when nothing the service writes fits."""
    device = {_base(f) for f in device_formats}
    fmt = _base(source)
    if fmt in device:
        return None
    if fmt not in SOURCE_FORMATS:
        raise ValueError(f"{fmt} cannot be transformed")
    for out in OUTPUT_FORMATS:
        if out in device and out != fmt:
            if out == "application/pdf" and fmt == "application/pdf":
                continue
            return out
    raise ValueError(f"the device takes none of the formats the service writes ({', '.join(OUTPUT_FORMATS)})")


def advertised_formats(device_formats: Iterable[str]) -> list[str]:
    """A print service's ``document-format-supported``: what its device takes, plus what the
    service can transform into one of those (device formats first, in the device's order)."""
    device = list(dict.fromkeys(device_formats))
    if not any(_base(f) in OUTPUT_FORMATS for f in device):
        return device
    return device + [f for f in SOURCE_FORMATS if f not in {_base(d) for d in device}]


def advertised_capabilities(capabilities: dict[str, Any]) -> dict[str, Any]:
    """A print service's capabilities as clients see them (HTTP and IPP):
    ``document-format-supported`` is what the service takes (the device's formats and those it
    transforms into them), ``document-format-device-supported`` what the device itself takes."""
    device = list(capabilities.get("document-format-supported") or ["application/pdf"])
    return {**capabilities, "document-format-supported": advertised_formats(device),
            "document-format-device-supported": device}

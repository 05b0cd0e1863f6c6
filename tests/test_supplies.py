"""Supplies (printer markers) end to end: the protocol field, its bounds, the Manager's ``ipp``
driver reading them from a real IPP printer (CUPS's ippeveprinter), the service storing them,
the HTTP printer view and the IPP front's printer-supply and marker-* attributes.

The LAN printer is the one of tests/test_ipp_driver.py: its print script, in ``supplies`` mode,
replays ``ATTR:``/``STATE:`` lines from a control file, which is how ippeveprinter lets a print
engine change its marker levels. Every value the cloud shows is compared with what the printer
itself answers to Get-Printer-Attributes.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest

from broker.credentials import generate_password
from cloud_service.ipp import everywhere
from cloud_service.ipp.conformance import minimal_pdf
from manager.drivers.ippsupplies import supplies_from_printer
from manager.drivers.simulated import SIMULATED_SUPPLIES
from schemas.ipp.codec import Group, Op, Tag, decode, request
from schemas.messages import Attributes, PrintServiceAttributes, ProtocolError, Reply, decode_up, encode
from schemas.supplies import MAX_SUPPLIES, Supply, parse_printer_supply, printer_supply
from tests.support.ipptools import cups_client_env, ipp, ipp_url, need_tool, new, reply, run, wait_for
from tests.support.rawdevice import RawDevice
from tests.support.stack import Stack, running_stack
from tests.test_ipp_driver import lan_stack, service

BLACK = {"name": "Black Toner", "type": "toner", "color": "#000000", "colorant": "black", "level": 75,
         "low_level": 10}


def attributes_payload(**supply_fields: Any) -> dict[str, Any]:
    """An attributes message as a Manager sends it, with one supply of ``supply_fields``."""
    message = Attributes(services=[PrintServiceAttributes(name="p1")]).model_dump(mode="json", exclude_none=True)
    message["services"][0]["supplies"] = [{**BLACK, **supply_fields}]
    return message


# ---------------------------------------------------------------------------- the protocol field


def test_supplies_travel_in_the_attributes_message() -> None:
    supplies = [Supply(**BLACK), Supply(name="Waste Toner Box", type="waste-toner", level=-3, high_level=90)]
    sent = Attributes(services=[PrintServiceAttributes(name="p1", supplies=supplies)])
    got = decode_up(encode(sent))
    assert isinstance(got, Attributes) and list(got.services[0].supplies) == supplies


def test_an_older_manager_without_supplies_still_works() -> None:
    message = Attributes(services=[PrintServiceAttributes(name="p1")]).model_dump(mode="json", exclude_none=True)
    del message["services"][0]["supplies"]
    got = decode_up(msgpack.packb(message))
    assert isinstance(got, Attributes) and got.services[0].supplies == []


@pytest.mark.parametrize(("field", "value"), [
    ("level", 101), ("level", -4), ("level", "half"), ("low_level", -1), ("high_level", 101),
    ("color", "black"), ("color", "#12345"), ("color", "#0000001"), ("type", "plasma"), ("name", ""),
    ("name", "Black\x07Toner"), ("name", "x" * 128), ("colorant", "black;level=100"), ("colorant", "a=b"),
    ("unknown_field", 1),
])
def test_bad_supplies_are_refused(field: str, value: object) -> None:
    with pytest.raises(ProtocolError) as refused:
        decode_up(msgpack.packb(attributes_payload(**{field: value})))
    assert refused.value.code == "bad-request" and "supplies" in refused.value.message


def test_the_list_of_supplies_is_bounded() -> None:
    message = attributes_payload()
    message["services"][0]["supplies"] = [BLACK] * (MAX_SUPPLIES + 1)
    with pytest.raises(ProtocolError, match="supplies"):
        decode_up(msgpack.packb(message))
    message["services"][0]["supplies"] = [BLACK] * MAX_SUPPLIES
    assert len(decode_up(msgpack.packb(message)).services[0].supplies) == MAX_SUPPLIES


def test_printer_supply_values_follow_pwg_5100_13() -> None:
    waste = Supply(name="Waste", type="waste-toner", level=25)
    assert printer_supply(1, waste) == (b"index=1;class=receptacleThatIsFilled;type=wasteToner;unit=percent;"
                                        b"maxcapacity=100;level=25;colorantname=unknown;")
    value = printer_supply(2, Supply(**BLACK))
    assert parse_printer_supply(value) == {"index": "2", "class": "supplyThatIsConsumed", "type": "toner",
                                           "unit": "percent", "maxcapacity": "100", "level": "75",
                                           "colorantname": "black"}


# ---------------------------------------------------------------------------- what the ipp driver reads


def test_the_driver_reads_printer_supply_and_marker_attributes() -> None:
    only_supply = Group(Tag.PRINTER)
    only_supply.add("printer-supply", Tag.OCTET_STRING, [
        b"index=1;class=supplyThatIsConsumed;type=inkCartridge;unit=percent;maxcapacity=200;level=50;"
        b"colorantname=cyan;",
        b"index=2;class=other;type=vendorGoo;unit=percent;maxcapacity=-2;level=-3;colorantname=unknown;"])
    only_supply.add("printer-supply-description", Tag.TEXT, ["Cyan Ink"])
    assert supplies_from_printer(only_supply) == (
        Supply(name="Cyan Ink", type="ink-cartridge", color="#00FFFF", colorant="cyan", level=25),
        Supply(name="Other", type="other", level=-3))

    markers = Group(Tag.PRINTER)
    markers.add("marker-names", Tag.NAME, ["Black", "Odd"])
    markers.add("marker-types", Tag.KEYWORD, ["toner", "plasma"])
    markers.add("marker-colors", Tag.NAME, ["#000000", "chartreuse"])
    markers.add("marker-levels", Tag.INTEGER, [40, 250])
    markers.add("marker-low-levels", Tag.INTEGER, [15, 5])
    assert supplies_from_printer(markers) == (
        Supply(name="Black", type="toner", color="#000000", level=40, low_level=15),
        Supply(name="Odd", type="other", level=-2, low_level=5))
    too_many = Group(Tag.PRINTER)
    too_many.add("marker-names", Tag.NAME, [f"ink {i}" for i in range(40)])
    assert len(supplies_from_printer(too_many)) == MAX_SUPPLIES


def test_the_front_gives_supply_warnings_their_severity_and_invents_none() -> None:
    assert everywhere.printer_state_reasons(["toner-low", "media-jam"]) == ["toner-low-warning", "media-jam"]
    assert everywhere.printer_state_reasons([]) == []
    assert everywhere.marker_attributes([]) == {}
    assert everywhere.printer_supplies([]) == everywhere.unknown_supplies()


# ---------------------------------------------------------------------------- end to end


async def printer_attributes(uri: str) -> Group:
    """The LAN printer's own answer to Get-Printer-Attributes, straight from it."""
    msg = request(Op.GET_PRINTER_ATTRIBUTES)
    msg.operation().add("printer-uri", Tag.URI, uri)
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(uri.replace("ipp://", "http://"), content=msg.encode(),
                                     headers={"Content-Type": "application/ipp"})
    group = decode(response.content)[0].group(Tag.PRINTER)
    assert group is not None
    return group


async def front_attributes(stack: Stack, name: str) -> Group:
    gpa = reply(await ipp(stack, name, new(stack, Op.GET_PRINTER_ATTRIBUTES, name), auth=None))
    group = gpa.group(Tag.PRINTER)
    assert group is not None
    return group


def values(group: Group, name: str) -> list[Any]:
    found = group.get(name)
    return list(found.values) if found is not None else []


MARKERS = ("marker-names", "marker-types", "marker-colors", "marker-levels", "marker-low-levels",
           "marker-high-levels")


@pytest.mark.slow
async def test_supplies_of_a_real_ipp_printer_reach_the_http_view_and_the_ipp_front(tmp_path: Path) -> None:
    async with lan_stack(tmp_path) as (stack, printer):
        # What ippeveprinter reports at start: printer-supply and its descriptions, no marker-*.
        eve = await printer_attributes(printer.uri)
        eve_supply = values(eve, "printer-supply")
        assert eve_supply and not values(eve, "marker-names")
        entries = [parse_printer_supply(v) for v in eve_supply]

        async def reported() -> list[dict] | None:
            return (await service(stack))["supplies"] or None

        supplies = await wait_for(reported, 20, "the printer's supplies did not reach the HTTP view")
        assert isinstance(supplies, list)
        assert [s["name"] for s in supplies] == values(eve, "printer-supply-description")
        assert [s["level"] for s in supplies] == [int(e["level"]) for e in entries]
        assert [s["colorant"] or "unknown" for s in supplies] == [e["colorantname"] for e in entries]
        assert "toner" in [s["type"] for s in supplies]

        front = await front_attributes(stack, "lan")
        assert values(front, "printer-supply") == eve_supply  # byte for byte
        assert values(front, "printer-supply-description") == values(eve, "printer-supply-description")
        assert values(front, "marker-levels") == [int(e["level"]) for e in entries]
        assert values(front, "marker-names") == values(eve, "printer-supply-description")

        # A job uses toner: the printer's levels change (and nothing else, not its state), and the
        # Manager publishes them on its own.
        names = ",".join(values(eve, "printer-supply-description"))
        supply = ",".join(f"'{v.decode().replace('level=75', 'level=62')}'" for v in eve_supply)
        (printer.ctrl / "supplies").write_text(
            f"ATTR: marker-names='{names}' marker-types=waste-toner,toner marker-colors=none,#000000 "
            f"marker-levels=25,62 marker-low-levels=0,10 marker-high-levels=90,100 printer-supply={supply}\n")
        assert [int(e["level"]) for e in entries] == [25, 75], entries  # ippeveprinter's own figures
        printer.mode("supplies")
        job = (await stack.submit(minimal_pdf(), {}, service="lan")).json()
        assert (await stack.wait_job(job["id"], timeout=60))["state"] == "completed"

        async def lower() -> bool:
            return [s["level"] for s in (await service(stack))["supplies"]] == [25, 62]

        await wait_for(lower, 20, "the new toner level did not reach the HTTP view")
        svc = await service(stack)
        assert svc["state_reasons"] == ["none"] and svc["supplies"][1]["low_level"] == 10
        eve = await printer_attributes(printer.uri)
        front = await front_attributes(stack, "lan")
        for name in MARKERS:
            assert values(front, name) == values(eve, name), name
        assert values(front, "printer-supply") == values(eve, "printer-supply")
        assert values(front, "printer-state-reasons") == ["none"]

        # Toner low, as the printer says: the front says it too, as a warning; never before.
        (printer.ctrl / "supplies").write_text(
            "ATTR: marker-levels=25,4\nSTATE: +toner-low\n")
        job = (await stack.submit(minimal_pdf(), {}, service="lan")).json()
        assert (await stack.wait_job(job["id"], timeout=60))["state"] == "completed"

        async def low() -> bool:
            svc = await service(stack)
            return [s["level"] for s in svc["supplies"]] == [25, 4] and svc["state_reasons"] == ["toner-low"]

        await wait_for(low, 20, "the low toner did not reach the HTTP view")
        eve = await printer_attributes(printer.uri)
        front = await front_attributes(stack, "lan")
        assert values(front, "marker-levels") == values(eve, "marker-levels") == [25, 4]
        assert values(eve, "printer-state-reasons") == ["toner-low-report"]
        assert values(front, "printer-state-reasons") == ["toner-low-warning"]


def supplies_test(path: Path) -> Path:
    """An ipptool test of the supply attributes (the EXPECTs of ipp-everywhere.test for
    printer-supply, and the marker-* lists being parallel and in range)."""
    path.write_text("""{
  NAME "Supplies"
  OPERATION Get-Printer-Attributes
  GROUP operation-attributes-tag
  ATTR charset attributes-charset utf-8
  ATTR naturalLanguage attributes-natural-language en
  ATTR uri printer-uri $uri
  ATTR keyword requested-attributes all
  STATUS successful-ok
  EXPECT printer-supply OF-TYPE octetString IN-GROUP printer-attributes-tag SAME-COUNT-AS printer-supply-description
  EXPECT printer-supply-description OF-TYPE text IN-GROUP printer-attributes-tag SAME-COUNT-AS printer-supply
  EXPECT printer-supply-info-uri OF-TYPE uri IN-GROUP printer-attributes-tag COUNT 1
  EXPECT printer-supply WITH-ALL-VALUES "/^index=[0-9]+;class=[a-zA-Z]+;type=[a-zA-Z]+;unit=percent;/"
  EXPECT marker-names OF-TYPE name IN-GROUP printer-attributes-tag SAME-COUNT-AS printer-supply
  EXPECT marker-colors OF-TYPE name SAME-COUNT-AS marker-names WITH-ALL-VALUES "/^(none|(#[0-9A-Fa-f]{6})+)$/"
  EXPECT marker-types OF-TYPE keyword SAME-COUNT-AS marker-names
  EXPECT marker-levels OF-TYPE integer SAME-COUNT-AS marker-names WITH-ALL-VALUES ">-4"
  EXPECT marker-levels WITH-ALL-VALUES "<101"
  EXPECT marker-low-levels OF-TYPE integer SAME-COUNT-AS marker-names WITH-ALL-VALUES ">-1"
  EXPECT marker-low-levels WITH-ALL-VALUES "<101"
  EXPECT marker-high-levels OF-TYPE integer SAME-COUNT-AS marker-names WITH-ALL-VALUES ">-1"
  EXPECT marker-high-levels WITH-ALL-VALUES "<101"
}
""")
    return path


@pytest.mark.slow
async def test_the_simulated_printer_shows_its_supplies_and_a_silent_device_the_unknown_entry(
        tmp_path: Path) -> None:
    ipptool = need_tool("ipptool", "cups-ipp-utils")
    async with running_stack(tmp_path) as stack:
        await stack.add_manager("sim", driver="simulated")
        await stack.add_manager("plain", driver="file")
        expected = [s.model_dump(mode="json") for s in SIMULATED_SUPPLIES]

        async def reported() -> bool:
            return (await stack.wait_service("sim"))["supplies"] == expected

        await wait_for(reported, 20, "the simulated printer's supplies did not reach the HTTP view")
        front = await front_attributes(stack, "sim")
        assert values(front, "marker-names") == [s.name for s in SIMULATED_SUPPLIES]
        assert values(front, "marker-levels") == [s.level for s in SIMULATED_SUPPLIES]
        assert values(front, "marker-colors") == [s.color for s in SIMULATED_SUPPLIES]
        assert values(front, "printer-supply") == [printer_supply(i, s) for i, s in enumerate(SIMULATED_SUPPLIES, 1)]
        code, output = await run([ipptool, "-T", "30", "-t", ipp_url(stack, "sim", "admin", stack.token),
                                  str(supplies_test(tmp_path / "supplies.test"))], cups_client_env(tmp_path), 60)
        assert code == 0 and "FAIL" not in output, output.replace(stack.token, "TOKEN")

        # A device that reports no supplies: an empty list, and the front's one unknown entry.
        assert (await stack.wait_service("plain"))["supplies"] == []
        front = await front_attributes(stack, "plain")
        assert values(front, "printer-supply") == [v for v, _ in everywhere.unknown_supplies()]
        assert not any(name in front.attributes for name in MARKERS)


async def test_the_service_stores_what_each_attributes_message_says(tmp_path: Path) -> None:
    """An older Manager's message (no supplies) is taken; a newer one replaces the list; a bad one
    is refused whole with bad-request and changes nothing."""
    async with running_stack(tmp_path) as stack:
        password = generate_password()
        await stack.add_user("raw-sup", password)
        device = await asyncio.to_thread(RawDevice, "raw-sup", password, stack.broker.url, stack.ca)
        try:
            def send(message: dict[str, Any]) -> Reply:
                device.send_raw(msgpack.packb(message))
                return device.next(re=message["id"])  # type: ignore[return-value]

            message = Attributes(services=[PrintServiceAttributes(name="raw-sup")]).model_dump(
                mode="json", exclude_none=True)
            del message["services"][0]["supplies"]
            assert (await asyncio.to_thread(send, message)).ok
            assert (await stack.wait_service("raw-sup"))["supplies"] == []

            with_supplies = attributes_payload()
            with_supplies["services"][0]["name"] = "raw-sup"
            assert (await asyncio.to_thread(send, with_supplies)).ok
            assert (await stack.wait_service("raw-sup"))["supplies"] == [{**BLACK, "high_level": None}]

            bad = attributes_payload(level=150)
            bad["services"][0]["name"] = "raw-sup"
            refused = await asyncio.to_thread(send, bad)
            assert not refused.ok and refused.code == "bad-request"
            assert (await stack.wait_service("raw-sup"))["supplies"][0]["level"] == 75
        finally:
            await asyncio.to_thread(device.close)


@pytest.mark.slow
async def test_ipptool_ipp_everywhere_passes_with_supplies(tmp_path: Path) -> None:
    """CUPS's ipp-everywhere.test against a printer whose device reports supplies (the suite's
    run without them is tests/test_ipp_everywhere.py)."""
    from cloud_service.ipp import conformance
    from tests.support.ipptools import everywhere_samples, ipptool_results, missing, placeholders_for_skipped
    from tests.test_ipp_everywhere import EVERYWHERE_CAPABILITIES

    ipptool = need_tool("ipptool", "cups-ipp-utils")
    gs = need_tool("gs", "ghostscript")
    if not (conformance.IPPTOOL_DIR / "ipp-everywhere.test").exists():
        missing(f"{conformance.IPPTOOL_DIR / 'ipp-everywhere.test'} is needed (apt-get install cups-ipp-utils)")
    work = conformance.prepare(tmp_path / "ipptool")
    async with running_stack(tmp_path) as stack:
        await stack.add_manager("inky", driver="simulated", options={"pages_per_second": 1000},
                                capabilities=EVERYWHERE_CAPABILITIES)
        front = await front_attributes(stack, "inky")
        assert values(front, "marker-names") == [s.name for s in SIMULATED_SUPPLIES]
        dpis = [r[0] for r in front.get("pwg-raster-document-resolution-supported").values]
        everywhere_samples(work, dpis, values(front, "pwg-raster-document-type-supported"), gs)
        placeholders_for_skipped(work, "ipp-everywhere.test")
        code, output = await run([ipptool, "-T", "30", "-V", "2.0", "-t", "-f", "document-letter.pdf",
                                  ipp_url(stack, "inky", "admin", stack.token), "ipp-everywhere.test"],
                                 cups_client_env(tmp_path), timeout=900, cwd=work)
        results = ipptool_results(output)
        shown = output.replace(stack.token, "TOKEN")
        assert results["FAIL"] == [] and code == 0, f"ipp-everywhere.test failed: {results['FAIL']}\n{shown}"
        assert "PWG 5100.14 section 5.1/5.2 - Required Operations and Attributes" in results["PASS"], shown

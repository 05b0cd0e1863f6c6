"""-o options to an IPP job ticket: types by attribute, page ranges, errors naming the attribute."""

from __future__ import annotations

import pytest

from client.options import MAX_PAGE, OptionError, build_ticket, parse_page_ranges, split_options


def test_every_documented_option_converts_to_its_ipp_type() -> None:
    ticket, fmt = build_ticket(
        [
            "sides=two-sided-long-edge",
            "media=iso_a4_210x297mm",
            "print-color-mode=color",
            "print-quality=5",
            "page-ranges=1-3,5",
            "number-up=2",
            "finishings=4,5",
            "orientation-requested=4",
        ]
    )
    assert fmt is None
    assert ticket == {
        "sides": "two-sided-long-edge",
        "media": "iso_a4_210x297mm",
        "print-color-mode": "color",
        "print-quality": 5,
        "page-ranges": [[1, 3], [5, 5]],
        "number-up": 2,
        "finishings": [4, 5],
        "orientation-requested": 4,
    }


def test_copies_and_title_flags_set_copies_and_job_name_and_win_over_o() -> None:
    ticket, _ = build_ticket(["copies=5", "job-name=old"], copies=2, title="Quarterly report")
    assert ticket["copies"] == 2
    assert ticket["job-name"] == "Quarterly report"


def test_empty_options_make_an_empty_ticket() -> None:
    assert build_ticket([]) == ({}, None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1-3,5", [[1, 3], [5, 5]]),
        ("7", [[7, 7]]),
        ("2-2", [[2, 2]]),
        ("1-2, 4-6", [[1, 2], [4, 6]]),
        ("5-", [[5, MAX_PAGE]]),
    ],
)
def test_page_ranges(text: str, expected: list[list[int]]) -> None:
    assert parse_page_ranges(text) == expected


@pytest.mark.parametrize("text", ["", "a-b", "1-x", "1,,2", "-3"])
def test_malformed_page_ranges_name_the_attribute(text: str) -> None:
    with pytest.raises(OptionError) as info:
        build_ticket([f"page-ranges={text}"])
    assert info.value.attribute == "page-ranges"
    assert "page-ranges" in str(info.value)


@pytest.mark.parametrize("text", ["3-1", "5,3", "1-4,4-6", "0-2"])
def test_page_ranges_out_of_order_are_refused_by_the_shared_schema(text: str) -> None:
    with pytest.raises(OptionError) as info:
        build_ticket([f"page-ranges={text}"])
    assert info.value.attribute == "page-ranges"
    assert repr(text) in str(info.value)  # the value the user typed, not the parsed list


@pytest.mark.parametrize(
    ("option", "attribute"),
    [
        ("copies=two", "copies"),
        ("print-quality=best", "print-quality"),
        ("print-quality=9", "print-quality"),
        ("number-up=0", "number-up"),
        ("orientation-requested=sideways", "orientation-requested"),
        ("finishings=4,glitter", "finishings"),
        ("sides=Two-Sided", "sides"),
        ("sidez=one-sided", "sidez"),
        ("job-name=a\x07b", "job-name"),
    ],
)
def test_bad_values_name_the_attribute(option: str, attribute: str) -> None:
    with pytest.raises(OptionError) as info:
        build_ticket([option])
    assert info.value.attribute == attribute
    assert str(info.value).startswith(attribute)


def test_unknown_attribute_says_so() -> None:
    with pytest.raises(OptionError, match="sidez: unknown job-ticket attribute"):
        build_ticket(["sidez=one-sided"])


def test_enum_keywords_and_cups_media_names_are_accepted() -> None:
    ticket, _ = build_ticket(
        ["print-quality=high", "orientation-requested=landscape", "finishings=staple,punch", "media=A4"]
    )
    assert ticket == {
        "print-quality": 5,
        "orientation-requested": 4,
        "finishings": [4, 5],
        "media": "iso_a4_210x297mm",
    }


def test_lp_style_several_options_in_one_o_with_quotes() -> None:
    ticket, _ = build_ticket(['job-name="Q3 report" sides=one-sided', "landscape"])
    assert ticket == {"job-name": "Q3 report", "sides": "one-sided", "orientation-requested": 4}


def test_option_without_value_is_refused() -> None:
    with pytest.raises(OptionError, match="not name=value"):
        split_options(["duplex"])


def test_unbalanced_quote_is_refused() -> None:
    with pytest.raises(OptionError, match="cannot parse"):
        split_options(['job-name="open'])


def test_document_format_option_is_lifted_out_of_the_ticket() -> None:
    ticket, fmt = build_ticket(["document-format=Application/PDF", "copies=1"])
    assert fmt == "application/pdf"
    assert ticket == {"copies": 1}


def test_names_are_case_insensitive_values_are_not_rewritten() -> None:
    ticket, _ = build_ticket(["SIDES=one-sided"])
    assert ticket == {"sides": "one-sided"}

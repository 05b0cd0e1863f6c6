"""job-impressions from a document's pages and the ticket (schemas.model.pages.impressions)."""

from __future__ import annotations

import math

import pytest

from schemas.model.pages import impressions


@pytest.mark.parametrize(("pages", "ticket", "expected"), [
    (36, None, 36),
    (36, {"copies": 2}, 72),
    (36, {"number-up": 2}, 18),
    (35, {"number-up": 2}, 18),  # the last side holds one page
    (36, {"number-up": 4, "copies": 2}, 18),
    (36, {"page-ranges": [[1, 10]]}, 10),
    (36, {"page-ranges": [[1, 10], [20, 25]], "number-up": 2, "copies": 3}, 24),
    (5, {"page-ranges": [[3, 99]]}, 3),  # clipped at the document's end
    (5, {"page-ranges": [[8, 9]]}, 1),  # selects nothing: still a sheet fed
    (5, {"page-ranges": [[8, 9]], "copies": 3}, 3),
    (0, None, 1),  # an uncounted document is one page
    (10, {"sides": "two-sided-long-edge"}, 10),  # sides change sheets, not impressions
    (10, {"copies": None, "number-up": None}, 10),
])
def test_impressions(pages: int, ticket: dict | None, expected: int) -> None:
    assert impressions(pages, ticket) == expected


def test_impressions_match_a_brute_force_count() -> None:
    for pages in range(1, 40):
        for number_up in (1, 2, 3, 4, 6, 9, 16):
            for ranges in ([[1, 1]], [[2, 5], [9, 30]], [[1, 100]], [[pages, pages + 3]]):
                chosen = [n for n in range(1, pages + 1) if any(lo <= n <= hi for lo, hi in ranges)]
                expected = 2 * max(1, math.ceil(len(chosen) / number_up))
                ticket = {"copies": 2, "number-up": number_up, "page-ranges": ranges}
                assert impressions(pages, ticket) == expected, (pages, number_up, ranges)

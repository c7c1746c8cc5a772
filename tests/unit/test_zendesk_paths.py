"""ZendeskSupport alone, its HTTP answered by a stub: what reaches a URL path, and the marker
that makes notes and replies written once."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from adapters.errors import AdapterError
from adapters.support import ZendeskSupport
from adapters.support.zendesk import without_write_marker, write_marker
from canonical import Customer


class StubbedSupport:
    """Answers each path from `answers`; keeps every request."""

    def __init__(self, answers: dict[str, dict[str, Any]]) -> None:
        self.answers = answers
        self.requests: list[httpx.Request] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.get(request.url.path)
        if answer is None:
            return httpx.Response(404, json={"error": "InvalidEndpoint"})
        return httpx.Response(200, json=answer)

    def adapter(self) -> ZendeskSupport:
        return ZendeskSupport(
            "https://example.zendesk.com",
            "a@b.test",
            "t",
            transport=httpx.MockTransport(self.handle),
        )


async def test_an_organization_id_not_shaped_like_zendesks_is_not_put_in_a_path() -> None:
    ticket = {
        "id": 12,
        "status": "open",
        "organization_id": "7/../../users/me",
        "updated_at": "2026-03-01T12:00:00+00:00",
    }
    stub = StubbedSupport({"/api/v2/tickets/12.json": {"ticket": ticket}})

    async with stub.adapter() as support:
        with pytest.raises(AdapterError, match="organization ids are numeric"):
            await support.get_case("12")

    assert [r.url.path for r in stub.requests] == ["/api/v2/tickets/12.json"]


async def test_a_renamed_organization_with_an_id_not_shaped_like_zendesks_is_not_written() -> None:
    found = {"id": "7?x=1", "name": "Old Name", "external_id": "cus_1"}
    stub = StubbedSupport({"/api/v2/organizations/search.json": {"organizations": [found]}})

    async with stub.adapter() as support:
        with pytest.raises(AdapterError, match="organization ids are numeric"):
            await support.ensure_organization(Customer(customer_id="cus_1", name="New"), "k")

    assert [r.method for r in stub.requests] == ["GET"]


def test_the_write_marker_is_short_stable_and_tells_nothing_of_its_key() -> None:
    key = "credit/360000000123/evt_1/outcome/applied/note"

    marker = write_marker(key)

    assert marker == write_marker(key)
    assert marker != write_marker(f"{key}-2")
    assert len(marker) <= 24 and "\n" not in marker
    assert "360000000123" not in marker and "credit" not in marker


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (f"Approved.\n\n{write_marker('k')}", "Approved."),
        (f"Two\nlines\n\n{write_marker('k')}\n", "Two\nlines"),
        ("Approved.", "Approved."),
        ("Ends with ref lb-something else", "Ends with ref lb-something else"),
    ],
)
def test_without_write_marker_gives_the_text_as_written(body: str, text: str) -> None:
    assert without_write_marker(body) == text

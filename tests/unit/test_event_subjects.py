"""Event subjects: a business id is always exactly one safe NATS token, and reversible."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.events.broker import business_id_from_token, subject_for, subject_token

SAFE_TOKEN = re.compile(r"[A-Za-z0-9_=-]+")


def test_ordinary_ids_stay_readable_in_the_subject() -> None:
    assert (
        subject_for("com.ledgerbridge.credit.approved.v1", "cr_1Abc-9")
        == "ledgerbridge.com.ledgerbridge.credit.approved.v1.cr_1Abc-9"
    )


@pytest.mark.parametrize(
    ("business_id", "token"),
    [
        ("acme.com", "acme=2Ecom"),  # a dot would split the token
        ("a b", "a=20b"),  # NATS subjects have no whitespace
        ("all*", "all=2A"),  # wildcards
        ("x>", "x=3E"),
        ("$SYS", "=24SYS"),  # reserved prefix
        ("a=2E", "a=3D2E"),  # the escape itself, so the id above stays distinct
        ("café", "caf=C3=A9"),  # UTF-8 bytes
    ],
)
def test_characters_outside_letters_digits_dash_underscore_are_escaped(
    business_id: str, token: str
) -> None:
    assert subject_token(business_id) == token
    assert business_id_from_token(token) == business_id


@given(st.text(min_size=1))
def test_every_id_is_one_safe_token_that_gives_the_id_back(business_id: str) -> None:
    token = subject_token(business_id)
    assert SAFE_TOKEN.fullmatch(token)
    assert business_id_from_token(token) == business_id


@given(st.text(min_size=1), st.text(min_size=1))
def test_two_ids_never_share_a_subject(first: str, second: str) -> None:
    if first != second:
        assert subject_token(first) != subject_token(second)


@pytest.mark.parametrize(
    "event_type", ["", "com..credit", "com.ledgerbridge.credit.*", "com.credit >", "a.b."]
)
def test_an_event_type_that_is_not_plain_tokens_is_refused(event_type: str) -> None:
    with pytest.raises(ValueError, match="event type"):
        subject_for(event_type, "cr_1")


def test_an_empty_business_id_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot be empty"):
        subject_for("com.ledgerbridge.credit.approved.v1", "")

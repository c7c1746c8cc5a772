"""The codec sign-in form as a browser posts it: the page asks for `Referrer-Policy:
same-origin`, so Chromium sends the page's real Origin (with no-referrer it sends `null`,
which the cross-site check refuses), and the check is the console's own."""

from __future__ import annotations

from pathlib import Path

from tests.unit.test_codec_sign_in import OPS_KEY, settings_for, started

OWN = "http://testserver"


def test_the_sign_in_page_keeps_the_origin_of_its_own_form(tmp_path: Path) -> None:
    client, _store = started(settings_for(tmp_path))
    assert client.get("/codec/login").headers["referrer-policy"] == "same-origin"


def test_a_form_posted_as_chromium_posts_it_from_the_page_signs_in(tmp_path: Path) -> None:
    client, store = started(settings_for(tmp_path))
    chromium = {"Origin": OWN, "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "navigate"}
    answer = client.post("/codec/login", data={"api_key": OPS_KEY}, headers=chromium)
    assert answer.status_code == 200 and "set-cookie" in answer.headers
    assert [e.action for e in store.audit_entries("codec/session")] == ["codec.signed_in"]


def test_an_opaque_or_cross_site_form_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    client, store = started(settings_for(tmp_path))
    for headers in (
        {"Origin": "null"},  # a sandboxed frame, a data: page, or a no-referrer page
        {"Origin": "null", "Sec-Fetch-Site": "same-origin"},
        {"Origin": OWN, "Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},  # another port of this host
    ):
        answer = client.post("/codec/login", data={"api_key": OPS_KEY}, headers=headers)
        assert answer.status_code == 403, headers
        assert "set-cookie" not in answer.headers
        assert client.post("/codec/logout", headers=headers).status_code == 403
    assert store.audit_entries("codec/session") == []

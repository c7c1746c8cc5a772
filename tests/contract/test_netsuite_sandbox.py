"""The NetSuite sandbox answers as SuiteTalk REST does, refusals included: raw HTTP signed by
oauthlib (no adapter in between), against a sandbox account private to this module."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from oauthlib.oauth1 import Client
from oauthlib.oauth1.rfc5849 import SIGNATURE_HMAC_SHA1, SIGNATURE_HMAC_SHA256

from sandbox.netsuite import DEFAULT_CONCURRENCY_LIMIT
from tests.fixtures.netsuite import NetSuiteServer

THIS_YEAR = dt.date.today().year


class Signed(httpx.Auth):
    """OAuth 1.0a as NetSuite's token-based authentication wants it; keywords override."""

    def __init__(self, server: NetSuiteServer, **overrides: Any) -> None:
        c = server.credentials
        self.options: dict[str, Any] = {
            "client_key": c.consumer_key,
            "client_secret": c.consumer_secret,
            "resource_owner_key": c.token_id,
            "resource_owner_secret": c.token_secret,
            "signature_method": SIGNATURE_HMAC_SHA256,
            "realm": c.account_id,
            **overrides,
        }

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        options = dict(self.options)
        client = Client(options.pop("client_key"), **options)
        _, headers, _ = client.sign(str(request.url), request.method)
        request.headers["Authorization"] = headers["Authorization"]
        yield request


@pytest.fixture(scope="module")
def server(netsuite_module_server: NetSuiteServer) -> NetSuiteServer:
    return netsuite_module_server


def api(server: NetSuiteServer, **overrides: Any) -> httpx.Client:
    return httpx.Client(
        base_url=f"{server.url}/services/rest", auth=Signed(server, **overrides), timeout=10
    )


def suiteql(client: httpx.Client, q: str, **params: Any) -> httpx.Response:
    return client.post(
        "/query/v1/suiteql", json={"q": q}, headers={"Prefer": "transient"}, params=params
    )


def error_code(response: httpx.Response) -> str:
    body = response.json()
    assert body["status"] == response.status_code
    assert body["type"].startswith("https://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html")
    assert isinstance(body["title"], str) and body["title"]
    (detail,) = body["o:errorDetails"]
    assert isinstance(detail["detail"], str) and detail["detail"]
    return str(detail["o:errorCode"])


def new_customer(client: httpx.Client, currencies: tuple[str, ...] = ("1", "2")) -> str:
    """A customer upserted by a fresh external id; its internal id."""
    external = f"cus_{uuid.uuid4().hex[:12]}"
    answer = client.put(
        f"/record/v1/customer/eid:{external}",
        json={
            "companyName": "Sandbox Test Co",
            "subsidiary": {"id": "1"},
            "currencyList": {"items": [{"currency": {"id": c}} for c in currencies]},
        },
    )
    assert answer.status_code == 204, answer.text
    return answer.headers["Location"].rsplit("/", 1)[1]


def invoice_body(customer: str, amount: str, on: dt.date | None = None) -> dict[str, Any]:
    return {
        "entity": {"id": customer},
        "currency": {"id": "1"},
        "tranDate": (on or dt.date.today()).isoformat(),
        "item": {"items": [{"item": {"id": "1"}, "amount": float(amount)}]},
    }


# --- token-based authentication -----------------------------------------------------------


def test_a_signed_call_is_answered(server: NetSuiteServer) -> None:
    with api(server) as client:
        assert suiteql(client, "SELECT id FROM subsidiary").status_code == 200


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"client_secret": "0" * 64}, id="bad-signature"),
        pytest.param({"resource_owner_key": "f" * 64}, id="unknown-token"),
        pytest.param({"realm": "9999999_SB1"}, id="wrong-realm"),
        pytest.param({"timestamp": str(int(time.time()) - 3600)}, id="stale-timestamp"),
        pytest.param({"signature_method": SIGNATURE_HMAC_SHA1}, id="hmac-sha1"),
    ],
)
def test_a_call_not_signed_by_the_accounts_token_is_invalid_login(
    server: NetSuiteServer, overrides: dict[str, Any]
) -> None:
    with api(server, **overrides) as client:
        refused = suiteql(client, "SELECT id FROM subsidiary")

    assert refused.status_code == 401
    assert error_code(refused) == "INVALID_LOGIN"
    assert "Login Audit Trail" in refused.json()["o:errorDetails"][0]["detail"]


def test_an_unsigned_call_is_invalid_login(server: NetSuiteServer) -> None:
    refused = httpx.get(f"{server.url}/services/rest/record/v1/customer/1")

    assert refused.status_code == 401 and error_code(refused) == "INVALID_LOGIN"


def test_a_nonce_is_good_for_one_request(server: NetSuiteServer) -> None:
    nonce, timestamp = uuid.uuid4().hex, str(int(time.time()))
    with api(server, nonce=nonce, timestamp=timestamp) as client:
        first = suiteql(client, "SELECT id FROM subsidiary")
        replayed = suiteql(client, "SELECT id FROM subsidiary")

    assert first.status_code == 200
    assert replayed.status_code == 401 and error_code(replayed) == "INVALID_LOGIN"


def test_a_signature_covers_the_query_string(server: NetSuiteServer) -> None:
    class Tampered(Signed):
        def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
            signed = next(iter(super().auth_flow(request)))
            signed.url = signed.url.copy_merge_params({"offset": "0"})
            yield signed

    with httpx.Client(base_url=f"{server.url}/services/rest", auth=Tampered(server)) as client:
        refused = suiteql(client, "SELECT id FROM subsidiary", limit=10)

    assert refused.status_code == 401


# --- concurrency governance ---------------------------------------------------------------


async def test_requests_past_the_accounts_concurrency_limit_are_refused_with_429(
    server: NetSuiteServer,
) -> None:
    assert server.governance()["concurrencyLimit"] == DEFAULT_CONCURRENCY_LIMIT
    server.governance(concurrencyLimit=2, latencySeconds=0.5, resetCounters=True)
    try:
        async with httpx.AsyncClient(
            base_url=f"{server.url}/services/rest", auth=Signed(server)
        ) as client:
            answers = await asyncio.gather(
                *(
                    client.post(
                        "/query/v1/suiteql",
                        json={"q": "SELECT id FROM currency"},
                        headers={"Prefer": "transient"},
                    )
                    for _ in range(5)
                )
            )
        seen = server.governance()
    finally:
        server.governance(concurrencyLimit=DEFAULT_CONCURRENCY_LIMIT, latencySeconds=0)

    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200, 200, 429, 429, 429]
    refused = [answer for answer in answers if answer.status_code == 429]
    assert {error_code(answer) for answer in refused} == {"CONCURRENCY_LIMIT_EXCEEDED"}
    assert seen["peak"] == 2 and seen["refused"] == 3
    assert seen["served"] == 2 and seen["busySeconds"] >= 2 * 0.5  # each held its slot 0.5 s


def test_resetting_the_governance_counters_keeps_the_latency_and_limit(
    server: NetSuiteServer,
) -> None:
    server.governance(concurrencyLimit=3, latencySeconds=0.25)
    try:
        reset = server.governance(resetCounters=True)
    finally:
        server.governance(concurrencyLimit=DEFAULT_CONCURRENCY_LIMIT, latencySeconds=0)

    assert reset["latencySeconds"] == 0.25 and reset["concurrencyLimit"] == 3
    assert reset["served"] == reset["refused"] == reset["peak"] == 0


def test_an_injected_outage_answers_netsuites_5xx_body(server: NetSuiteServer) -> None:
    server.admin("POST", "faults", {"status": 503, "count": 1})
    with api(server) as client:
        outage = suiteql(client, "SELECT id FROM currency")
        after = suiteql(client, "SELECT id FROM currency")

    assert outage.status_code == 503 and error_code(outage) == "UNEXPECTED_ERROR"
    assert after.status_code == 200


# --- the record service -------------------------------------------------------------------


def test_create_answers_204_with_the_records_location(server: NetSuiteServer) -> None:
    with api(server) as client:
        created = client.post("/record/v1/customer", json={"companyName": "Posted Co"})
        record = client.get(created.headers["Location"])

    assert created.status_code == 204 and created.content == b""
    assert created.headers["Location"].startswith(f"{server.url}/services/rest/record/v1/customer/")
    assert record.status_code == 200 and record.json()["companyName"] == "Posted Co"


def test_eid_upsert_creates_once_then_updates_the_same_record(server: NetSuiteServer) -> None:
    external = f"cus_{uuid.uuid4().hex[:12]}"
    with api(server) as client:
        created = client.put(
            f"/record/v1/customer/eid:{external}", json={"companyName": "First Name"}
        )
        updated = client.put(
            f"/record/v1/customer/eid:{external}", json={"companyName": "Second Name"}
        )
        record = client.get(f"/record/v1/customer/eid:{external}")
        count = suiteql(
            client, f"SELECT count(*) AS n FROM customer WHERE externalid = '{external}'"
        ).json()["items"][0]["n"]

    assert created.status_code == updated.status_code == 204
    assert created.headers["Location"] == updated.headers["Location"]
    assert record.json()["companyName"] == "Second Name"
    assert record.json()["externalId"] == external
    assert count == "1"


def test_put_with_an_internal_id_is_no_upsert(server: NetSuiteServer) -> None:
    with api(server) as client:
        customer = new_customer(client)
        refused = client.put(f"/record/v1/customer/{customer}", json={"companyName": "X"})

    assert refused.status_code == 400 and error_code(refused) == "INVALID_PARAMETER"


def test_an_unknown_record_is_nonexistent_id_by_id_and_by_eid(server: NetSuiteServer) -> None:
    with api(server) as client:
        by_id = client.get("/record/v1/invoice/999999")
        by_eid = client.get("/record/v1/invoice/eid:in_never_posted")

    assert by_id.status_code == by_eid.status_code == 404
    assert error_code(by_id) == error_code(by_eid) == "NONEXISTENT_ID"


def test_an_unknown_field_is_refused_naming_it(server: NetSuiteServer) -> None:
    with api(server) as client:
        refused = client.post("/record/v1/customer", json={"companyName": "X", "colour": "red"})

    assert refused.status_code == 400 and error_code(refused) == "INVALID_CONTENT"
    assert refused.json()["o:errorDetails"][0]["o:errorPath"] == "colour"


def test_a_record_reads_references_and_expands_sublists_only_when_asked(
    server: NetSuiteServer,
) -> None:
    with api(server) as client:
        customer = new_customer(client)
        client.put("/record/v1/invoice/eid:in_shape_" + customer, json=invoice_body(customer, "10"))
        plain = client.get("/record/v1/invoice/eid:in_shape_" + customer).json()
        expanded = client.get(
            "/record/v1/invoice/eid:in_shape_" + customer, params={"expandSubResources": "true"}
        ).json()

    assert plain["entity"]["id"] == customer and plain["currency"]["refName"] == "USD"
    assert set(plain["item"]) == {"links"}
    (line,) = expanded["item"]["items"]
    assert line["item"]["refName"] == "SUBSCRIPTION" and line["amount"] == 10
    assert plain["total"] == 10 and plain["status"] == {"id": "open", "refName": "Open"}


# --- SuiteQL ------------------------------------------------------------------------------


def test_suiteql_pages_with_has_more_offset_and_links(server: NetSuiteServer) -> None:
    marker = uuid.uuid4().hex[:8]
    with api(server) as client:
        for n in range(3):
            client.put(
                f"/record/v1/customer/eid:page_{marker}_{n}", json={"companyName": f"Page {n}"}
            )
        query = (
            f"SELECT id, externalid AS ExternalId FROM customer WHERE externalid LIKE "
            f"'page_{marker}_%' ORDER BY id"
        )
        first = suiteql(client, query, limit=2).json()
        second = suiteql(client, query, limit=2, offset=2).json()

    assert (first["count"], first["hasMore"], first["offset"], first["totalResults"]) == (
        2,
        True,
        0,
        3,
    )
    assert [row["externalid"] for row in first["items"]] == [f"page_{marker}_0", f"page_{marker}_1"]
    links = {link["rel"]: link["href"] for link in first["links"]}
    assert links["next"].endswith("/services/rest/query/v1/suiteql?limit=2&offset=2")
    assert "previous" not in links and links["self"].endswith("limit=2&offset=0")
    assert (second["count"], second["hasMore"], second["offset"]) == (1, False, 2)
    assert {link["rel"] for link in second["links"]} == {"first", "previous", "self"}
    assert all(item["links"] == [] for item in first["items"] + second["items"])


def test_suiteql_values_are_strings_and_null_columns_are_left_out(server: NetSuiteServer) -> None:
    with api(server) as client:
        customer = new_customer(client)
        (row,) = suiteql(
            client, f"SELECT id, email, subsidiary FROM customer WHERE id = {customer}"
        ).json()["items"]

    assert row == {"links": [], "id": customer, "subsidiary": "1"}


def test_suiteql_needs_prefer_transient(server: NetSuiteServer) -> None:
    with api(server) as client:
        refused = client.post("/query/v1/suiteql", json={"q": "SELECT id FROM currency"})

    assert refused.status_code == 400 and error_code(refused) == "INVALID_HEADER"


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM customer",
        "UPDATE customer SET companyname = 'x'",
        "INSERT INTO customer (companyname) VALUES ('x')",
        "WITH doomed AS (SELECT id FROM customer) DELETE FROM customer",
        "SELECT body FROM _record",
        "SELECT id FROM customer; DELETE FROM customer",
    ],
)
def test_suiteql_only_reads(server: NetSuiteServer, statement: str) -> None:
    with api(server) as client:
        new_customer(client)
        before = suiteql(client, "SELECT count(*) AS n FROM customer").json()["items"]
        refused = suiteql(client, statement)
        after = suiteql(client, "SELECT count(*) AS n FROM customer").json()["items"]

    assert refused.status_code == 400 and error_code(refused) == "INVALID_PARAMETER"
    assert before == after


@pytest.mark.parametrize("params", [{"limit": 1001}, {"limit": 0}, {"limit": 10, "offset": 5}])
def test_suiteql_refuses_a_limit_over_1000_and_an_offset_off_the_page(
    server: NetSuiteServer, params: dict[str, int]
) -> None:
    with api(server) as client:
        refused = suiteql(client, "SELECT id FROM currency", **params)

    assert refused.status_code == 400 and error_code(refused) == "INVALID_PARAMETER"


# --- the books' rules ---------------------------------------------------------------------


def test_posting_into_a_closed_period_is_refused_until_it_is_reopened(
    server: NetSuiteServer,
) -> None:
    on = dt.date(THIS_YEAR + 1, 2, 10)
    with api(server) as client:
        customer = new_customer(client)
        key = f"/record/v1/invoice/eid:in_closed_{customer}"
        server.close_period(on)
        try:
            refused = client.put(key, json=invoice_body(customer, "25", on))
            missing = client.get(key)
            closed = suiteql(
                client,
                "SELECT closed FROM accountingperiod WHERE startdate = "
                f"TO_DATE('{on.replace(day=1)}', 'YYYY-MM-DD')",
            ).json()
        finally:
            server.open_period(on)
        posted = client.put(key, json=invoice_body(customer, "25", on))

    assert refused.status_code == 400 and error_code(refused) == "USER_ERROR"
    assert "closed" in refused.json()["o:errorDetails"][0]["detail"]
    assert missing.status_code == 404
    assert closed["items"][0]["closed"] == "T"
    assert posted.status_code == 204


def test_a_posted_invoice_in_a_closed_period_cannot_be_edited(server: NetSuiteServer) -> None:
    on = dt.date(THIS_YEAR + 1, 3, 10)
    with api(server) as client:
        customer = new_customer(client)
        key = f"/record/v1/invoice/eid:in_edit_{customer}"
        assert client.put(key, json=invoice_body(customer, "25", on)).status_code == 204
        server.close_period(on)
        try:
            refused = client.patch(key, json={"memo": "changed"})
        finally:
            server.open_period(on)

    assert refused.status_code == 400 and error_code(refused) == "USER_ERROR"


def test_no_period_covers_a_date_outside_the_accounts_years(server: NetSuiteServer) -> None:
    with api(server) as client:
        customer = new_customer(client)
        refused = client.post(
            "/record/v1/invoice", json=invoice_body(customer, "5", dt.date(THIS_YEAR - 5, 1, 1))
        )

    assert refused.status_code == 400 and error_code(refused) == "USER_ERROR"


def test_applying_more_than_remains_due_is_refused_and_writes_nothing(
    server: NetSuiteServer,
) -> None:
    with api(server) as client:
        customer = new_customer(client)
        invoice_key = f"/record/v1/invoice/eid:in_over_{customer}"
        client.put(invoice_key, json=invoice_body(customer, "100"))
        invoice = client.get(invoice_key).json()["id"]

        def pay(name: str, amount: float) -> httpx.Response:
            return client.put(
                f"/record/v1/customerPayment/eid:{name}_{customer}",
                json={
                    "entity": {"id": customer},
                    "currency": {"id": "1"},
                    "payment": amount,
                    "paymentMethod": {"id": "1"},
                    "apply": {"items": [{"doc": {"id": invoice}, "apply": True, "amount": amount}]},
                },
            )

        partial = pay("first", 60)
        refused = pay("second", 40.01)
        missing = client.get(f"/record/v1/customerPayment/eid:second_{customer}")
        rest = pay("third", 40)
        settled = client.get(invoice_key).json()

    assert partial.status_code == 204
    assert refused.status_code == 400 and error_code(refused) == "USER_ERROR"
    assert refused.json()["o:errorDetails"][0]["o:errorPath"] == "apply.items[0].amount"
    assert missing.status_code == 404
    assert rest.status_code == 204
    assert settled["amountRemaining"] == 0 and settled["status"]["id"] == "paidInFull"


def test_a_credit_memo_applies_no_more_than_the_invoice_owes_and_refunds_no_more_than_it_holds(
    server: NetSuiteServer,
) -> None:
    with api(server) as client:
        customer = new_customer(client)
        client.put(f"/record/v1/invoice/eid:in_cm_{customer}", json=invoice_body(customer, "30"))
        invoice = client.get(f"/record/v1/invoice/eid:in_cm_{customer}").json()["id"]
        credit = {
            "entity": {"id": customer},
            "currency": {"id": "1"},
            "item": {"items": [{"item": {"id": "4"}, "amount": 50}]},
        }
        client.put(f"/record/v1/creditMemo/eid:cn_{customer}", json=credit)
        memo = client.get(f"/record/v1/creditMemo/eid:cn_{customer}").json()["id"]
        over_apply = client.patch(
            f"/record/v1/creditMemo/{memo}",
            json={"apply": {"items": [{"doc": {"id": invoice}, "apply": True, "amount": 30.01}]}},
        )
        applied = client.patch(
            f"/record/v1/creditMemo/{memo}",
            json={"apply": {"items": [{"doc": {"id": invoice}, "apply": True, "amount": 30}]}},
        )

        def refund(amount: float) -> httpx.Response:
            return client.post(
                "/record/v1/customerRefund",
                json={
                    "entity": {"id": customer},
                    "currency": {"id": "1"},
                    "paymentMethod": {"id": "1"},
                    "apply": {"items": [{"doc": {"id": memo}, "apply": True, "amount": amount}]},
                },
            )

        over_refund = refund(20.01)
        refunded = refund(20)
        memo_after = client.get(f"/record/v1/creditMemo/{memo}").json()

    assert over_apply.status_code == 400 and error_code(over_apply) == "USER_ERROR"
    assert applied.status_code == 204
    assert over_refund.status_code == 400 and error_code(over_refund) == "USER_ERROR"
    assert refunded.status_code == 204
    assert memo_after["unapplied"] == 0 and memo_after["status"]["id"] == "fullyApplied"


def test_a_currency_the_customer_does_not_hold_is_refused(server: NetSuiteServer) -> None:
    with api(server) as client:
        customer = new_customer(client, currencies=("1",))
        refused = client.post(
            "/record/v1/invoice", json={**invoice_body(customer, "5"), "currency": {"id": "3"}}
        )

    assert refused.status_code == 400 and error_code(refused) == "INVALID_CONTENT"

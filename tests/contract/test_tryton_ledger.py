"""TrytonLedger against the real Tryton 8.2 server over HTTP (and its wire codec)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import uuid
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from adapters.erp import TrytonLedger, tryton_dumps, tryton_loads
from adapters.erp.tryton import SERVICE_PRODUCT_CODE
from adapters.errors import (
    AuthenticationError,
    RateLimitedError,
    RejectedError,
    TransientError,
    ValidationError,
)
from canonical import Customer, PostalAddress
from tests.fixtures.servers import free_port
from tests.fixtures.tryton import TrytonServer, TrytonTemplate, run_tryton_server


def new_customer(name: str = "Acme Corp", address: PostalAddress | None = None) -> Customer:
    return Customer(customer_id=f"cus_{uuid.uuid4().hex[:14]}", name=name, address=address)


# --- against the real server ----------------------------------------------------------


async def test_server_answers_health_and_version(tryton_ledger: TrytonLedger) -> None:
    assert await tryton_ledger.health() is True
    assert await tryton_ledger.server_version() == "8.2"


async def test_login_context_carries_company_and_companies(tryton_ledger: TrytonLedger) -> None:
    context = tryton_ledger.context
    assert isinstance(context["company"], int)
    assert context["companies"] == [context["company"]]


async def test_ensure_party_creates_the_party_once(tryton_ledger: TrytonLedger) -> None:
    customer = new_customer(
        address=PostalAddress(line1="1 Main St", line2="Suite 2", city="Springfield")
    )

    first = await tryton_ledger.ensure_party(customer)
    second = await tryton_ledger.ensure_party(customer)

    assert first == second
    assert first.system == "erp"
    assert first.customer_id == customer.customer_id
    assert first.name == customer.name
    count = await tryton_ledger.call(
        "model.party.party.search_count", [("code", "=", customer.customer_id)]
    )
    assert count == 1
    (party,) = await tryton_ledger.call(
        "model.party.party.read", [int(first.external_id)], ["addresses"]
    )
    (address,) = await tryton_ledger.call(
        "model.party.address.read", party["addresses"], ["street_unstructured", "city"]
    )
    assert address["street_unstructured"] == "1 Main St\nSuite 2"
    assert address["city"] == "Springfield"


async def test_ensure_party_gives_a_customer_without_address_an_invoice_address(
    tryton_ledger: TrytonLedger,
) -> None:
    record = await tryton_ledger.ensure_party(new_customer())

    (party,) = await tryton_ledger.call(
        "model.party.party.read", [int(record.external_id)], ["addresses"]
    )
    assert len(party["addresses"]) == 1


async def test_concurrent_ensure_party_calls_leave_one_party(tryton_ledger: TrytonLedger) -> None:
    customer = new_customer()

    records = await asyncio.gather(*(tryton_ledger.ensure_party(customer) for _ in range(3)))

    assert len({record.external_id for record in records}) == 1
    count = await tryton_ledger.call(
        "model.party.party.search_count", [("code", "=", customer.customer_id)]
    )
    assert count == 1


async def test_ensure_party_renames_a_renamed_customer(tryton_ledger: TrytonLedger) -> None:
    customer = new_customer("Old Name Ltd")
    created = await tryton_ledger.ensure_party(customer)

    renamed = await tryton_ledger.ensure_party(customer.model_copy(update={"name": "New Name Ltd"}))

    assert renamed.external_id == created.external_id
    assert renamed.name == "New Name Ltd"
    found = await tryton_ledger.find_party(customer.customer_id)
    assert found is not None and found.name == "New Name Ltd"


async def test_find_party_finds_an_existing_party(tryton_ledger: TrytonLedger) -> None:
    customer = new_customer()
    created = await tryton_ledger.ensure_party(customer)

    assert await tryton_ledger.find_party(customer.customer_id) == created


async def test_find_party_of_unknown_customer_is_none(tryton_ledger: TrytonLedger) -> None:
    assert await tryton_ledger.find_party(f"cus_unknown_{uuid.uuid4().hex[:8]}") is None


async def test_logged_out_session_is_renewed_by_logging_in_again(
    tryton_server: TrytonServer, tryton_ledger: TrytonLedger
) -> None:
    old_authorization = tryton_ledger._rpc._authorization
    assert old_authorization is not None
    rpc_url = f"{tryton_server.url}/{tryton_server.database}/rpc/"
    async with httpx.AsyncClient() as client:
        logout = await client.post(
            rpc_url,
            json={"id": 1, "method": "common.db.logout", "params": []},
            headers={"Authorization": old_authorization},
        )
        assert logout.status_code == 200
        # The server really forgot the session: the old header is now refused.
        refused = await client.post(
            rpc_url,
            json={"id": 2, "method": "model.party.party.search", "params": [[], 0, 1, None, {}]},
            headers={"Authorization": old_authorization},
        )
        assert refused.status_code == 401

    assert await tryton_ledger.find_party("cus_nobody_here") is None
    assert tryton_ledger._rpc._authorization not in (None, old_authorization)


async def test_tampered_session_is_renewed_by_logging_in_again(
    tryton_server: TrytonServer, tryton_ledger: TrytonLedger
) -> None:
    forged = base64.b64encode(f"{tryton_server.user}:2:{'0' * 64}".encode()).decode()
    tryton_ledger._rpc._authorization = f"Session {forged}"

    record = await tryton_ledger.ensure_party(new_customer())

    assert record.external_id
    assert tryton_ledger._rpc._authorization != f"Session {forged}"


async def test_bad_password_raises_authentication_error(tryton_server: TrytonServer) -> None:
    ledger = TrytonLedger(
        tryton_server.url, tryton_server.database, tryton_server.user, "not-the-password"
    )
    try:
        with pytest.raises(AuthenticationError) as raised:
            await ledger.find_party("cus_whoever")
    finally:
        await ledger.aclose()
    assert raised.value.status == 401
    assert raised.value.retryable is False


async def test_refused_connection_raises_transient_error() -> None:
    ledger = TrytonLedger(f"http://127.0.0.1:{free_port()}", "ledgerbridge", "u", "p")
    try:
        assert await ledger.health() is False
        with pytest.raises(TransientError) as raised:
            await ledger.find_party("cus_whoever")
    finally:
        await ledger.aclose()
    assert raised.value.retryable is True


async def test_duplicate_party_code_is_rejected_with_the_remote_message(
    tryton_ledger: TrytonLedger,
) -> None:
    customer = new_customer()
    await tryton_ledger.ensure_party(customer)

    with pytest.raises(RejectedError) as raised:
        await tryton_ledger.call(
            "model.party.party.create", [{"name": "Clone", "code": customer.customer_id}]
        )

    assert raised.value.retryable is False
    assert raised.value.remote_code == "UserError"
    assert "unique" in raised.value.message


async def test_missing_required_field_is_rejected(tryton_ledger: TrytonLedger) -> None:
    with pytest.raises(RejectedError) as raised:
        await tryton_ledger.call("model.party.address.create", [{"city": "Nowhere"}])
    assert 'A value is required for field "Party"' in raised.value.message


async def test_method_not_exposed_is_a_validation_error(tryton_ledger: TrytonLedger) -> None:
    with pytest.raises(ValidationError) as raised:
        await tryton_ledger.call("model.party.party.no_such_method")
    assert raised.value.status == 403


async def test_dates_and_decimals_come_back_typed_from_the_server(
    tryton_ledger: TrytonLedger,
) -> None:
    year = dt.date.today().year
    fiscal_years = await tryton_ledger.call(
        "model.account.fiscalyear.search_read",
        [("start_date", "=", dt.date(year, 1, 1))],
        0,
        None,
        None,
        ["start_date", "end_date"],
    )
    assert [(fy["start_date"], fy["end_date"]) for fy in fiscal_years] == [
        (dt.date(year, 1, 1), dt.date(year, 12, 31))
    ]
    (usd,) = await tryton_ledger.call(
        "model.currency.currency.search_read", [("code", "=", "USD")], 0, 1, None, ["rounding"]
    )
    assert usd["rounding"] == Decimal("0.01")


async def test_next_years_fiscal_year_exists_for_the_new_year(tryton_ledger: TrytonLedger) -> None:
    year = dt.date.today().year + 1
    periods = await tryton_ledger.call(
        "model.account.period.search_count",
        [("fiscalyear.start_date", "=", dt.date(year, 1, 1)), ("type", "=", "standard")],
    )
    assert periods == 12


# --- the wire codec (unit level) -------------------------------------------------------


def test_decimal_travels_as_tryton_decimal_object() -> None:
    assert json.loads(tryton_dumps(Decimal("1234.50"))) == {
        "__class__": "Decimal",
        "decimal": "1234.50",
    }


def test_date_travels_as_tryton_date_object() -> None:
    assert json.loads(tryton_dumps(dt.date(2026, 3, 9))) == {
        "__class__": "date",
        "year": 2026,
        "month": 3,
        "day": 9,
    }


def test_decimal_date_and_datetime_round_trip_exactly() -> None:
    values = {
        "amount": Decimal("-0.005"),
        "big": Decimal("123456789012345678.99"),
        "date": dt.date(2026, 12, 31),
        "at": dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC),
        "nested": [{"price": Decimal("9.99"), "on": dt.date(2027, 1, 1)}],
    }

    assert tryton_loads(tryton_dumps(values)) == values


def test_aware_datetime_is_sent_as_naive_utc() -> None:
    paris = dt.timezone(dt.timedelta(hours=1))
    wire = json.loads(tryton_dumps(dt.datetime(2026, 1, 2, 10, 0, tzinfo=paris)))
    assert (wire["hour"], wire["day"]) == (9, 2)


def test_floats_are_not_turned_into_money() -> None:
    # Only typed Decimal objects become Decimal; a bare JSON number stays what it was.
    assert tryton_loads('{"quantity": 1.5}') == {"quantity": 1.5}


# --- error mapping of answers the real server rarely gives (MockTransport) --------------


def mock_ledger(handler: httpx.MockTransport) -> TrytonLedger:
    return TrytonLedger("http://erp.test", "db", "user", "secret", transport=handler)


def login_or(answer: httpx.Response, calls: list[str] | None = None) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        method = json.loads(request.content)["method"]
        if calls is not None:
            calls.append(method)
        if method == "common.db.login":
            return httpx.Response(200, json={"id": 1, "result": [2, "token", None]})
        if method == "model.res.user.get_preferences":
            return httpx.Response(200, json={"id": 1, "result": {"company": 1, "companies": [1]}})
        return answer

    return httpx.MockTransport(handle)


async def test_429_maps_to_rate_limited_with_retry_after() -> None:
    async with mock_ledger(login_or(httpx.Response(429, headers={"Retry-After": "7"}))) as ledger:
        with pytest.raises(RateLimitedError) as raised:
            await ledger.find_party("cus_x")
    assert raised.value.retry_after == 7.0


async def test_503_maps_to_transient() -> None:
    async with mock_ledger(login_or(httpx.Response(503, text="database is locked"))) as ledger:
        with pytest.raises(TransientError) as raised:
            await ledger.find_party("cus_x")
    assert raised.value.status == 503


async def test_user_warning_maps_to_rejected_with_its_name() -> None:
    body = {"id": 1, "error": ["UserWarning", ["late_posting", "Posting is late", ""]]}
    async with mock_ledger(login_or(httpx.Response(200, json=body))) as ledger:
        with pytest.raises(RejectedError) as raised:
            await ledger.call("model.account.invoice.post", [1])
    assert raised.value.remote_code == "UserWarning:late_posting"
    assert raised.value.message == "Posting is late"


async def test_persistent_401_logs_in_once_more_then_gives_up() -> None:
    calls: list[str] = []
    async with mock_ledger(login_or(httpx.Response(401), calls)) as ledger:
        with pytest.raises(AuthenticationError):
            await ledger.find_party("cus_x")
    assert calls.count("common.db.login") == 2
    assert calls.count("model.party.party.search_read") == 2


async def test_user_without_company_is_refused_at_login() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        method = json.loads(request.content)["method"]
        if method == "common.db.login":
            return httpx.Response(200, json={"id": 1, "result": [2, "token", None]})
        return httpx.Response(200, json={"id": 1, "result": {"company": None, "companies": []}})

    async with mock_ledger(httpx.MockTransport(handle)) as ledger:
        with pytest.raises(AuthenticationError, match="no company"):
            await ledger.login()


async def test_integration_user_can_post_an_invoice_and_a_credit_note(
    tryton_template: TrytonTemplate, tmp_path: Path
) -> None:
    # Own server: posted documents must not leak into other tests' reconciliations.
    with run_tryton_server(tryton_template.sqlite, tmp_path) as server:
        async with server.ledger() as ledger:
            party = await ledger.ensure_party(new_customer())
            party_id = int(party.external_id)
            (address_id,) = (
                await ledger.call("model.party.party.read", [party_id], ["addresses"])
            )[0]["addresses"]
            (journal_id,) = await ledger.call(
                "model.account.journal.search", [("type", "=", "revenue")], 0, 1
            )
            (receivable_id,) = await ledger.call(
                "model.account.account.search", [("type.receivable", "=", True)], 0, 1
            )
            (product,) = await ledger.call(
                "model.product.product.search_read",
                [("code", "=", SERVICE_PRODUCT_CODE)],
                0,
                1,
                None,
                ["default_uom", "template.account_category"],
            )
            (category,) = await ledger.call(
                "model.product.category.read",
                [product["template."]["account_category"]],
                ["account_revenue"],
            )
            numbers = []
            for quantity in (1, -1):
                (invoice_id,) = await ledger.call(
                    "model.account.invoice.create",
                    [
                        {
                            "type": "out",
                            "party": party_id,
                            "invoice_address": address_id,
                            "account": receivable_id,
                            "journal": journal_id,
                            "reference": "in_test_1",
                            "lines": [
                                (
                                    "create",
                                    [
                                        {
                                            "product": product["id"],
                                            "unit": product["default_uom"],
                                            "account": category["account_revenue"],
                                            "quantity": quantity,
                                            "unit_price": Decimal("123.45"),
                                            "description": "Proration",
                                        }
                                    ],
                                )
                            ],
                        }
                    ],
                )
                await ledger.call("model.account.invoice.post", [invoice_id])
                (posted,) = await ledger.call(
                    "model.account.invoice.read", [invoice_id], ["number", "state", "total_amount"]
                )
                assert posted["state"] == "posted"
                assert posted["total_amount"] == Decimal("123.45") * quantity
                numbers.append(posted["number"])
    year = dt.date.today().year
    assert numbers == [f"INV-{year}-00001", f"CN-{year}-00001"]


async def test_concurrent_calls_on_an_expired_session_log_in_again_only_once() -> None:
    logins: list[str] = []
    valid: set[str] = set()

    async def handle(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.01)  # let the concurrent calls interleave as on a real network
        method = json.loads(request.content)["method"]
        if method == "common.db.login":
            token = f"token{len(logins)}"
            logins.append(token)
            valid.add(token)
            return httpx.Response(200, json={"id": 1, "result": [2, token, None]})
        session = base64.b64decode(request.headers["Authorization"].split()[1]).decode()
        if session.rsplit(":", 1)[1] not in valid:
            return httpx.Response(401)
        if method == "model.res.user.get_preferences":
            return httpx.Response(200, json={"id": 1, "result": {"company": 1, "companies": [1]}})
        return httpx.Response(200, json={"id": 1, "result": []})

    async with mock_ledger(httpx.MockTransport(handle)) as ledger:
        await ledger.login()
        valid.clear()  # the server forgets every session (idle timeout, restart)

        results = await asyncio.gather(*(ledger.find_party(f"cus_{n}") for n in range(5)))

    assert results == [None] * 5
    assert logins == ["token0", "token1"]


@pytest.mark.parametrize("hostile", ["..", ".", "../rpc/", "%", "_", "cus_%", "a/b?c=d"])
async def test_ids_are_exact_values_never_paths_or_patterns(
    tryton_ledger: TrytonLedger, hostile: str
) -> None:
    """Tryton takes ids in the JSON-RPC body (the URL holds only the configured database), as
    exact `=` values: no id can reach another endpoint or match other records as a pattern."""
    existing = await tryton_ledger.ensure_party(new_customer())
    assert existing.customer_id  # a party exists that a pattern such as "%" would match

    assert await tryton_ledger.find_party(hostile) is None
    assert await tryton_ledger.find_document(hostile) is None

"""ZendeskSupport: the SupportDesk port over the Zendesk REST API v2.

A customer is a Zendesk organization whose `external_id` is the canonical customer id.
A support case is a ticket; the credit an agent asks for lives in four ticket custom
fields found by title (`CREDIT_FIELD_TITLES`). Every failure surfaces as the taxonomy of
`adapters.errors`.

Zendesk honours `Idempotency-Key` on ticket creation only, which this adapter never does, so
it sends none and looks before it writes: an organization is searched by external id before
it is created; a note or reply ends with a marker line derived from the caller's idempotency
key (`write_marker`) and is skipped when a comment of the ticket already carries it; tags are
added with `additional_tags`, which adding twice leaves as once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx

from adapters.errors import (
    AdapterError,
    ConflictError,
    NotFoundError,
    ValidationError,
    error_for_status,
    transport_errors_as_transient,
)
from adapters.metrics import adapter_call
from canonical import AccountRecord, Customer
from canonical.entitlements import Entitlements
from canonical.money import CurrencyError, Money, currency_exponent
from canonical.reconciliation import TicketCredit, TicketCreditPage
from canonical.support import CreditAsk, SupportCase

SYSTEM = "support"

CREDIT_AMOUNT = "Credit amount"
CREDIT_CURRENCY = "Credit currency"
CREDIT_REASON = "Credit reason"
INCIDENT_REFERENCE = "Incident reference"
CREDIT_FIELD_TITLES = (CREDIT_AMOUNT, CREDIT_CURRENCY, CREDIT_REASON, INCIDENT_REFERENCE)
# An organization's external id rarely changes; a minute of staleness saves a GET per case.
ORGANIZATION_CACHE_SECONDS = 60.0
# The tag the case-to-credit process puts on a ticket once the credit is given.
CREDIT_APPLIED_TAG = "credit_applied"
# Export Search Results answers at most this many results a page.
MAX_EXPORT_PAGE_SIZE = 1000
# List Comments answers at most this many comments a cursor page.
MAX_COMMENT_PAGE_SIZE = 100
# The last line of a note or reply: the key's digest, so no customer data shows in it.
WRITE_MARKER_PREFIX = "ref lb-"
WRITE_MARKER_DIGITS = 16

# The organization fields that carry a customer's entitlements (keys are Zendesk's handles
# for them; agents see the titles). The status is a dropdown, so agents can filter on it.
PLAN_FIELD = "ledgerbridge_plan"
STATUS_FIELD = "ledgerbridge_subscription_status"
PAID_THROUGH_FIELD = "ledgerbridge_paid_through"
SUBSCRIPTION_FIELD = "ledgerbridge_subscription_id"
# The status option written when billing has no subscription for the customer.
NO_SUBSCRIPTION = "none"
SUBSCRIPTION_STATUSES = (
    ("Active", "active"), ("Trialing", "trialing"), ("Past due", "past_due"),
    ("Unpaid", "unpaid"), ("Canceled", "canceled"), ("Incomplete", "incomplete"),
    ("Incomplete, expired", "incomplete_expired"), ("Paused", "paused"),
    ("No subscription", NO_SUBSCRIPTION),
)  # fmt: skip
ENTITLEMENT_FIELDS: tuple[dict[str, Any], ...] = (
    {"key": PLAN_FIELD, "type": "text", "title": "Plan",
     "description": "The billing plan (kept by ledgerbridge from billing)"},
    {"key": STATUS_FIELD, "type": "dropdown", "title": "Subscription status",
     "description": "The billing subscription's status (kept by ledgerbridge from billing)",
     "custom_field_options": [{"name": n, "value": v} for n, v in SUBSCRIPTION_STATUSES]},
    {"key": PAID_THROUGH_FIELD, "type": "date", "title": "Paid through",
     "description": "End of the period the latest paid invoice covers (kept by ledgerbridge)"},
    {"key": SUBSCRIPTION_FIELD, "type": "text", "title": "Subscription id",
     "description": "The billing subscription (kept by ledgerbridge from billing)"},
)  # fmt: skip


def write_marker(idempotency_key: str) -> str:
    """The line a note or reply written under `idempotency_key` ends with."""
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:WRITE_MARKER_DIGITS]
    return f"{WRITE_MARKER_PREFIX}{digest}"


def without_write_marker(body: str) -> str:
    """A comment body as its writer meant it, the marker line taken off."""
    text, _, last = body.rstrip().rpartition("\n")
    if last.startswith(WRITE_MARKER_PREFIX) and len(last) == len(write_marker("")):
        return text.rstrip()
    return body


def _is_zendesk_id(value: str) -> bool:
    """Zendesk ids are digits; anything else in a path would reach another endpoint (or none)."""
    return value.isascii() and value.isdigit()


def _search_second(moment: datetime) -> int:
    """The first whole second at or after `moment`: Zendesk times are whole seconds, so
    updated >= moment is updated >= this, and updated < moment is updated < this."""
    if moment.tzinfo is None:
        raise ValueError("datetimes sent to support must be timezone-aware")
    return math.ceil(moment.timestamp())


def _search_time(unix: int) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _record(org: dict[str, Any]) -> AccountRecord:
    return AccountRecord(
        system=SYSTEM,
        external_id=str(org["id"]),
        customer_id=str(org.get("external_id") or ""),
        name=str(org["name"]),
    )


def _field_date(value: Any) -> date | None:
    """A date field as Zendesk answers it: `2026-05-31` or `2026-05-31T00:00:00+00:00`."""
    text = _text(value)
    if text is None:
        return None
    return date.fromisoformat(text[:10])


def _entitlement_values(entitlements: Entitlements) -> dict[str, Any]:
    """The organization_fields that say these entitlements."""
    return {
        PLAN_FIELD: entitlements.plan,
        STATUS_FIELD: entitlements.status or NO_SUBSCRIPTION,
        PAID_THROUGH_FIELD: (
            entitlements.paid_through.isoformat() if entitlements.paid_through else None
        ),
        SUBSCRIPTION_FIELD: entitlements.subscription_id,
    }


def _comparable(key: str, value: Any) -> Any:
    """A field value as written or as answered, so the two compare (dates come back as
    midnight UTC)."""
    return _field_date(value) if key == PAID_THROUGH_FIELD else _text(value)


def _entitlements_of(org: dict[str, Any]) -> Entitlements | None:
    """The entitlements an organization carries; None when none were ever written."""
    values = org.get("organization_fields") or {}
    status = _text(values.get(STATUS_FIELD))
    if status is None:
        return None
    known = {value for _, value in SUBSCRIPTION_STATUSES}
    if status not in known:
        raise ValueError(f"{STATUS_FIELD} holds an unknown status {status!r}")
    return Entitlements(
        customer_id=str(org.get("external_id") or ""),
        plan=_text(values.get(PLAN_FIELD)),
        subscription_id=_text(values.get(SUBSCRIPTION_FIELD)),
        status=None if status == NO_SUBSCRIPTION else status,  # type: ignore[arg-type]
        paid_through=_field_date(values.get(PAID_THROUGH_FIELD)),
        as_of=datetime.fromisoformat(str(org["updated_at"]).replace("Z", "+00:00")),
    )


def _text(value: Any) -> str | None:
    """A custom field value as stripped text; None when unset or blank."""
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip()
    return text or None


def _credit_amount(value: Any, currency: str) -> Money:
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise ValueError(f"{CREDIT_AMOUNT!r} is not a decimal amount: {value!r}")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"{CREDIT_AMOUNT!r} is not a decimal amount: {value!r}") from None
    if not amount.is_finite() or amount <= 0:
        raise ValueError(f"{CREDIT_AMOUNT!r} must be a positive amount, got {value!r}")
    if amount != amount.quantize(Decimal(1).scaleb(-currency_exponent(currency))):
        raise ValueError(f"{CREDIT_AMOUNT!r} {value!r} has more decimals than {currency} allows")
    return Money(amount=amount, currency=currency)


class _InvalidCreditField(ValueError):
    def __init__(self, title: str, problem: str) -> None:
        super().__init__(f"{title!r}: {problem}")
        self.title = title
        self.problem = problem


def _field_value(values: dict[str, Any], fields: dict[str, list[str]], title: str) -> Any:
    """The value of the credit field titled `title`; several fields may share a title, and
    the one that holds a value speaks."""
    for field_id in fields.get(title, []):
        if _text(values.get(field_id)) is not None:
            return values[field_id]
    return None


def _credit_money(values: dict[str, Any], fields: dict[str, list[str]]) -> Money | None:
    """The credit amount filled in on a ticket, None when there is none; _InvalidCreditField
    when the amount or its currency is malformed."""
    raw_amount = _field_value(values, fields, CREDIT_AMOUNT)
    if _text(raw_amount) is None:
        return None
    currency = (_text(_field_value(values, fields, CREDIT_CURRENCY)) or "").upper()
    if not currency:
        raise _InvalidCreditField(CREDIT_CURRENCY, "is empty but a credit amount is set")
    try:
        currency_exponent(currency)
    except CurrencyError:
        raise _InvalidCreditField(CREDIT_CURRENCY, f"unknown currency {currency!r}") from None
    try:
        return _credit_amount(raw_amount, currency)
    except ValueError as err:
        raise _InvalidCreditField(CREDIT_AMOUNT, str(err)) from None


def _is_duplicate(error: AdapterError, field: str) -> bool:
    """Whether a 422 RecordInvalid says `field` is already taken."""
    answer = error.remote_answer
    if error.status != 422 or not isinstance(answer, dict):
        return False
    details = answer.get("details")
    if not isinstance(details, dict):
        return False
    return any(
        isinstance(item, dict) and item.get("error") == "DuplicateValue"
        for item in details.get(field) or []
    )


class ZendeskSupport:
    """The support desk, spoken to as Zendesk with an API token."""

    def __init__(
        self,
        base_url: str,
        email: str,
        api_token: str,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        # Ticket field ids by title, read once; organization external ids for a minute.
        self._fields_by_title: dict[str, list[str]] | None = None
        self._fields_lock = asyncio.Lock()
        self._org_external_ids: dict[str, tuple[float, str | None]] = {}
        # Whether the entitlement fields are known to exist (checked once per adapter).
        self._entitlement_fields_ready = False
        self._entitlement_fields_lock = asyncio.Lock()
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            auth=httpx.BasicAuth(f"{email}/token", api_token),
            # Connecting should be quick; a slow answer gets the whole budget.
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
            headers={"Accept": "application/json", "User-Agent": "ledgerbridge"},
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> ZendeskSupport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the port --------------------------------------------------------------------

    async def find_organization(self, customer_id: str) -> AccountRecord | None:
        org = await self._find(customer_id, "find_organization")
        return None if org is None else _record(org)

    async def ensure_organization(self, customer: Customer, idempotency_key: str) -> AccountRecord:
        """The customer's organization, created or renamed to match. Zendesk keeps no
        idempotency for organizations: the search by external id before the create is what
        makes a retry find the first attempt's work, so `idempotency_key` is not sent."""
        operation = "ensure_organization"
        org = await self._find(customer.customer_id, operation)
        if org is None:
            org = await self._create(customer, operation)
        if org["name"] != customer.name:
            org = await self._rename(org, customer, operation)
        return _record(org)

    async def ensure_entitlement_fields(self) -> list[str]:
        """Define the organization fields entitlements live in, those missing; the keys
        created. Looks before it creates (Zendesk keeps no idempotency for fields) and takes
        a key another writer created meanwhile as done. ConflictError when a field with one
        of our keys exists with another type or lacks a status option: an admin changed it,
        and writing into it would fail or mislead."""
        operation = "ensure_entitlement_fields"
        async with self._entitlement_fields_lock:
            if self._entitlement_fields_ready:
                return []
            existing = await self._organization_fields(operation)
            created = []
            for wanted in ENTITLEMENT_FIELDS:
                field = existing.get(wanted["key"])
                if field is None:
                    field = await self._create_organization_field(wanted, operation)
                    created.append(wanted["key"])
                self._check_field(field, wanted, operation)
            self._entitlement_fields_ready = True
            return created

    async def read_entitlements(self, customer_id: str) -> Entitlements | None:
        """The entitlements the customer's organization carries; None when it carries none
        yet. NotFoundError when support has no organization for the customer."""
        operation = "read_entitlements"
        org = await self._find(customer_id, operation)
        if org is None:
            raise NotFoundError(
                f"support has no organization for customer {customer_id!r}",
                system=SYSTEM,
                operation=operation,
            )
        return self._entitlements(org, operation)

    async def write_entitlements(self, entitlements: Entitlements) -> bool:
        """Make the customer's organization carry these entitlements; False when it already
        did (nothing written). Zendesk takes no idempotency key for organizations: the read
        before the write is what makes a retry write nothing. Only the fields that differ
        are sent, and the answer is checked, since Zendesk drops keys it does not know."""
        operation = "write_entitlements"
        await self.ensure_entitlement_fields()
        org = await self._find(entitlements.customer_id, operation)
        if org is None:
            raise NotFoundError(
                f"support has no organization for customer {entitlements.customer_id!r}",
                system=SYSTEM,
                operation=operation,
            )
        if entitlements.same_standing(self._entitlements(org, operation)):
            return False
        current = org.get("organization_fields") or {}
        changes = {
            key: value
            for key, value in _entitlement_values(entitlements).items()
            if _comparable(key, current.get(key)) != _comparable(key, value)
        }
        answer = await self._call(
            "PUT",
            self._organization_path(str(org["id"]), operation),
            operation,
            json={"organization": {"organization_fields": changes}},
        )
        written = self._entitlements(dict(answer["organization"]), operation)
        if not entitlements.same_standing(written):
            self._entitlement_fields_ready = False  # look at the fields again next time
            raise ValidationError(
                f"support did not keep the entitlements of customer"
                f" {entitlements.customer_id!r}: its organization fields may have been changed",
                system=SYSTEM,
                operation=operation,
                remote_code="EntitlementFieldsMissing",
                remote_answer={"sent": changes, "organization_id": org["id"]},
            )
        return True

    async def get_case(self, case_id: str) -> SupportCase:
        """The ticket as a SupportCase. NotFoundError for an unknown ticket; ValidationError
        (naming the field) when the credit fields hold a malformed amount or currency."""
        operation = "get_case"
        ticket = await self._ticket(case_id, operation)
        organization_id = ticket.get("organization_id")
        org_id = None if organization_id is None else str(organization_id)
        customer_id = None if org_id is None else await self._customer_id(org_id, operation)
        values = {str(f.get("id")): f.get("value") for f in ticket.get("custom_fields") or []}
        credit = self._credit(case_id, values, await self._credit_fields(operation), operation)
        assignee = ticket.get("assignee_id")
        return SupportCase(
            case_id=str(ticket["id"]),
            organization_id=org_id,
            customer_id=customer_id,
            subject=str(ticket.get("subject") or ""),
            status=str(ticket["status"]),
            priority=ticket.get("priority"),
            tags=[str(tag) for tag in ticket.get("tags") or []],
            assignee_id=None if assignee is None else str(assignee),
            credit=credit,
            updated_at=datetime.fromisoformat(str(ticket["updated_at"])),
        )

    async def add_internal_note(self, case_id: str, body: str, idempotency_key: str) -> None:
        """A private comment (`public: false`): agents see it, the customer does not. Written
        once per `idempotency_key`, however often it is retried."""
        await self._comment_once(case_id, body, False, idempotency_key, "add_internal_note")

    async def add_public_reply(self, case_id: str, body: str, idempotency_key: str) -> None:
        """A public comment (`public: true`): the customer is told. Written once per
        `idempotency_key`, however often it is retried."""
        await self._comment_once(case_id, body, True, idempotency_key, "add_public_reply")

    async def add_tags(self, case_id: str, tags: list[str], idempotency_key: str) -> None:
        """Add tags, keeping the ticket's others (`additional_tags`, never a replace). Adding
        a tag twice leaves it once, so `idempotency_key` is not needed."""
        await self._update_ticket(case_id, {"additional_tags": list(tags)}, "add_tags")

    async def credit_ticket_page(
        self, updated_from: datetime, updated_until: datetime, cursor: str | None, limit: int
    ) -> TicketCreditPage:
        """Up to `limit` (at most 1,000) tickets tagged `credit_applied` whose updated_at is in
        [from, until), in the order support answers them (no order is promised).

        Read with Zendesk's Export Search Results (`GET /api/v2/search/export`, query
        `tags:credit_applied updated>=… updated<…`, the type only as `filter[type]=ticket`,
        since the export refuses `type:` in the query):
        cursor paged, unlike `/search.json`, whose offset pages shift when a ticket leaves
        the range while being read and stop at 1,000 results. `cursor` is None for the first
        page, then the `next_cursor` of the page before (pass the same period); Zendesk's
        cursors expire after an hour, and search sees a change a few minutes late, so read a
        period once it has closed. The tag and the range are checked again here, so a page
        may hold fewer than `limit` tickets. The amount is None when the credit fields are
        unset or malformed (never an error: reconciliation reports the ticket either way);
        the customer is the ticket organization's external id, None without one.
        """
        if limit < 1:
            raise ValueError("a page holds at least one ticket")
        operation = "credit_ticket_page"
        start, end = _search_second(updated_from), _search_second(updated_until)
        params: dict[str, Any] = {
            "query": (
                f"tags:{CREDIT_APPLIED_TAG}"
                f" updated>={_search_time(start)} updated<{_search_time(end)}"
            ),
            "filter[type]": "ticket",
            "page[size]": min(limit, MAX_EXPORT_PAGE_SIZE),
        }
        if cursor is not None:
            params["page[after]"] = cursor
        response = await self._send("GET", "/api/v2/search/export", operation, params=params)
        # Decimal field values must never pass through float.
        answer = json.loads(response.content, parse_float=Decimal)
        fields = await self._credit_fields(operation)
        tickets = []
        for result in answer.get("results") or []:
            if result.get("result_type", "ticket") != "ticket":
                continue
            credit = await self._ticket_credit(result, fields, operation)
            in_range = start <= credit.updated_at.timestamp() < end
            if in_range and CREDIT_APPLIED_TAG in (result.get("tags") or []):
                tickets.append(credit)
        meta = answer.get("meta") or {}
        after = meta.get("after_cursor")
        next_cursor = str(after) if meta.get("has_more") and after else None
        return TicketCreditPage(tickets=tickets, next_cursor=next_cursor)

    async def _ticket_credit(
        self, ticket: dict[str, Any], fields: dict[str, list[str]], operation: str
    ) -> TicketCredit:
        organization_id = ticket.get("organization_id")
        customer_id = (
            None
            if organization_id is None
            else await self._customer_id(str(organization_id), operation)
        )
        values = {str(f.get("id")): f.get("value") for f in ticket.get("custom_fields") or []}
        try:
            amount = _credit_money(values, fields)
        except _InvalidCreditField:
            amount = None  # reconciliation lists the ticket without an amount
        try:
            return TicketCredit(
                case_id=str(ticket["id"]),
                customer_id=customer_id,
                amount=amount,
                updated_at=datetime.fromisoformat(str(ticket["updated_at"])),
            )
        except (KeyError, ValueError) as err:
            raise AdapterError(
                f"unmappable ticket from support: {err}",
                system=SYSTEM,
                operation=operation,
                remote_answer={"id": ticket.get("id")},
            ) from err

    # -- cases -----------------------------------------------------------------------

    @staticmethod
    def _ticket_path(case_id: str, operation: str) -> str:
        if not _is_zendesk_id(case_id):
            raise NotFoundError(
                f"no support ticket {case_id!r} (ticket ids are numeric)",
                system=SYSTEM,
                operation=operation,
            )
        return f"/api/v2/tickets/{case_id}.json"

    @staticmethod
    def _organization_path(org_id: str, operation: str) -> str:
        # Organization ids come from support's own answers: a malformed one is unmappable.
        if not _is_zendesk_id(org_id):
            raise AdapterError(
                f"support answered organization id {org_id!r} (organization ids are numeric)",
                system=SYSTEM,
                operation=operation,
                remote_answer={"organization_id": org_id},
            )
        return f"/api/v2/organizations/{org_id}.json"

    async def _ticket(self, case_id: str, operation: str) -> dict[str, Any]:
        response = await self._send("GET", self._ticket_path(case_id, operation), operation)
        # Decimal field values must never pass through float.
        return dict(json.loads(response.content, parse_float=Decimal)["ticket"])

    async def _update_ticket(self, case_id: str, changes: dict[str, Any], operation: str) -> None:
        await self._send(
            "PUT", self._ticket_path(case_id, operation), operation, json={"ticket": changes}
        )

    async def _comment_once(
        self, case_id: str, body: str, public: bool, idempotency_key: str, operation: str
    ) -> None:
        """Comment unless a comment of the ticket carries this key's marker: Zendesk does not
        honour Idempotency-Key on updates, so a retried comment would post twice."""
        path = self._ticket_path(case_id, operation)
        marker = write_marker(idempotency_key)
        if await self._has_comment_marked(path.removesuffix(".json"), marker, operation):
            return
        comment = {"body": f"{body.rstrip()}\n\n{marker}", "public": public}
        await self._send("PUT", path, operation, json={"ticket": {"comment": comment}})

    async def _has_comment_marked(self, ticket_path: str, marker: str, operation: str) -> bool:
        """Whether a comment of the ticket carries `marker`, newest comments read first (a
        retry follows its lost write closely)."""
        path = f"{ticket_path}/comments.json"
        params: dict[str, Any] = {"sort": "-created_at", "page[size]": MAX_COMMENT_PAGE_SIZE}
        while True:
            answer = await self._call("GET", path, operation, params=params)
            for comment in answer.get("comments") or []:
                if any(marker in str(comment.get(k) or "") for k in ("body", "plain_body")):
                    return True
            meta = answer.get("meta") or {}
            if not (meta.get("has_more") and meta.get("after_cursor")):
                return False
            params = {**params, "page[after]": str(meta["after_cursor"])}

    async def _customer_id(self, org_id: str, operation: str) -> str | None:
        """The organization's external id (the canonical customer id), cached a minute."""
        now = time.monotonic()
        cached = self._org_external_ids.get(org_id)
        if cached is not None and now - cached[0] < ORGANIZATION_CACHE_SECONDS:
            return cached[1]
        try:
            answer = await self._call("GET", self._organization_path(org_id, operation), operation)
        except NotFoundError:
            return None  # the organization is gone: the case has no known customer
        external_id = answer["organization"].get("external_id") or None
        self._org_external_ids[org_id] = (now, external_id)
        return external_id

    async def _credit_fields(self, operation: str) -> dict[str, list[str]]:
        """Ticket field ids by title for the credit fields, read once per adapter."""
        async with self._fields_lock:
            if self._fields_by_title is None:
                by_title: dict[str, list[str]] = {title: [] for title in CREDIT_FIELD_TITLES}
                path: str | None = "/api/v2/ticket_fields.json"
                while path is not None:
                    answer = await self._call("GET", path, operation)
                    for field in answer.get("ticket_fields") or []:
                        title = str(field.get("title") or "").strip()
                        if title in by_title and field.get("active", True):
                            by_title[title].append(str(field["id"]))
                    path = answer.get("next_page")
                self._fields_by_title = by_title
            return self._fields_by_title

    def _credit(
        self,
        case_id: str,
        values: dict[str, Any],
        fields: dict[str, list[str]],
        operation: str,
    ) -> CreditAsk | None:
        def invalid(title: str, problem: str) -> ValidationError:
            return ValidationError(
                f"ticket {case_id} field {title!r}: {problem}",
                system=SYSTEM,
                operation=operation,
                remote_code="InvalidCreditField",
                remote_answer={"ticket_id": case_id, "field": title},
            )

        try:
            amount = _credit_money(values, fields)
        except _InvalidCreditField as err:
            raise invalid(err.title, err.problem) from None
        if amount is None:
            return None
        reason = _text(_field_value(values, fields, CREDIT_REASON))
        if reason is None:
            raise invalid(CREDIT_REASON, "is empty but a credit amount is set")
        return CreditAsk(
            amount=amount,
            reason=reason,
            incident_reference=_text(_field_value(values, fields, INCIDENT_REFERENCE)),
        )

    # -- entitlement fields ------------------------------------------------------------

    @staticmethod
    def _entitlements(org: dict[str, Any], operation: str) -> Entitlements | None:
        try:
            return _entitlements_of(org)
        except (ValueError, KeyError) as err:
            raise AdapterError(
                f"unreadable entitlements on support organization {org.get('id')}: {err}",
                system=SYSTEM,
                operation=operation,
                remote_answer={"organization_id": org.get("id")},
            ) from err

    async def _organization_fields(self, operation: str) -> dict[str, dict[str, Any]]:
        """Every organization field by key (offset pages, `next_page` until none)."""
        fields: dict[str, dict[str, Any]] = {}
        path: str | None = "/api/v2/organization_fields.json"
        while path is not None:
            answer = await self._call("GET", path, operation)
            for field in answer.get("organization_fields") or []:
                fields[str(field.get("key"))] = field
            path = answer.get("next_page")
        return fields

    async def _create_organization_field(
        self, wanted: dict[str, Any], operation: str
    ) -> dict[str, Any]:
        try:
            answer = await self._call(
                "POST", "/api/v2/organization_fields.json", operation,
                json={"organization_field": wanted},
            )  # fmt: skip
        except AdapterError as err:
            if not _is_duplicate(err, "key"):
                raise
            # Created by another writer since we looked (or retired: then it stays missing).
            raced = (await self._organization_fields(operation)).get(wanted["key"])
            if raced is None:
                raise
            return raced
        return dict(answer["organization_field"])

    @staticmethod
    def _check_field(field: dict[str, Any], wanted: dict[str, Any], operation: str) -> None:
        problem = None
        if field.get("type") != wanted["type"]:
            problem = f"is of type {field.get('type')!r}, not {wanted['type']!r}"
        elif not field.get("active", True):
            problem = "is inactive"
        elif wanted["type"] == "dropdown":
            have = {str(o.get("value")) for o in field.get("custom_field_options") or []}
            missing = [o["value"] for o in wanted["custom_field_options"] if o["value"] not in have]
            if missing:
                problem = f"lacks the options {', '.join(missing)}"
        if problem:
            raise ConflictError(
                f"support organization field {wanted['key']!r} {problem}; an admin must"
                f" restore it before entitlements can be written",
                system=SYSTEM,
                operation=operation,
                remote_answer={"field_id": field.get("id"), "key": wanted["key"]},
            )

    # -- steps -----------------------------------------------------------------------

    async def _find(self, customer_id: str, operation: str) -> dict[str, Any] | None:
        answer = await self._call(
            "GET",
            "/api/v2/organizations/search.json",
            operation,
            params={"external_id": customer_id},
        )
        # Zendesk matches loosely elsewhere; only an exact external id is this customer.
        found = [
            org for org in answer.get("organizations", []) if org.get("external_id") == customer_id
        ]
        if len(found) > 1:
            raise ConflictError(
                f"{len(found)} support organizations carry external id {customer_id!r}",
                system=SYSTEM,
                operation=operation,
                remote_answer={"organization_ids": [org["id"] for org in found]},
            )
        return found[0] if found else None

    async def _create(self, customer: Customer, operation: str) -> dict[str, Any]:
        body = {"organization": {"name": customer.name, "external_id": customer.customer_id}}
        try:
            answer = await self._call("POST", "/api/v2/organizations.json", operation, json=body)
        except AdapterError as err:
            if not (_is_duplicate(err, "external_id") or _is_duplicate(err, "name")):
                raise
            # Another worker may have created it between our search and our create.
            raced = await self._find(customer.customer_id, operation)
            if raced is not None:
                return raced
            if _is_duplicate(err, "name"):
                raise await self._name_taken(customer, operation, err) from err
            raise
        return dict(answer["organization"])

    async def _rename(
        self, org: dict[str, Any], customer: Customer, operation: str
    ) -> dict[str, Any]:
        try:
            answer = await self._call(
                "PUT",
                self._organization_path(str(org["id"]), operation),
                operation,
                json={"organization": {"name": customer.name}},
            )
        except AdapterError as err:
            if _is_duplicate(err, "name"):
                raise await self._name_taken(customer, operation, err) from err
            raise
        return dict(answer["organization"])

    async def _name_taken(
        self, customer: Customer, operation: str, cause: AdapterError
    ) -> ConflictError:
        """The conflict to report when another organization holds the customer's name."""
        holder: dict[str, Any] | None = None
        try:
            answer = await self._call(
                "GET",
                "/api/v2/organizations/search.json",
                operation,
                params={"name": customer.name},
            )
            holders = answer.get("organizations") or []
            holder = holders[0] if holders else None
        except AdapterError:
            holder = None  # the conflict itself is what matters; the lookup is a courtesy
        held_by = (
            f"organization {holder['id']} (external id {holder.get('external_id')!r})"
            if holder
            else "another organization"
        )
        # The name stays out of the message: it may be a person's name.
        return ConflictError(
            f"cannot give customer {customer.customer_id!r} its support organization:"
            f" the name is already taken by {held_by}",
            system=SYSTEM,
            operation=operation,
            status=cause.status,
            remote_code="DuplicateValue",
            remote_answer={
                "answer": cause.remote_answer,
                "holder_id": holder["id"] if holder else None,
                "holder_external_id": holder.get("external_id") if holder else None,
            },
        )

    # -- HTTP ------------------------------------------------------------------------

    async def _call(self, method: str, path: str, operation: str, **kwargs: Any) -> dict[str, Any]:
        response = await self._send(method, path, operation, **kwargs)
        return dict(response.json())

    async def _send(self, method: str, path: str, operation: str, **kwargs: Any) -> httpx.Response:
        with adapter_call(SYSTEM, operation):
            with transport_errors_as_transient(SYSTEM, operation):
                response = await self._client.request(method, path, **kwargs)
            if response.is_success:
                return response
            raise self._error(response, operation)

    @staticmethod
    def _error(response: httpx.Response, operation: str) -> AdapterError:
        answer: Any
        try:
            answer = response.json()
        except ValueError:
            answer = response.text[:500]
        code: str | None = None
        message = f"HTTP {response.status_code}"
        if isinstance(answer, dict):
            error = answer.get("error")
            if isinstance(error, dict):  # some Zendesk endpoints nest {"title", "message"}
                code = error.get("title")
                message = str(error.get("message") or code or message)
            elif isinstance(error, str):
                code = error
                message = str(answer.get("description") or error)
        return error_for_status(
            response.status_code,
            message,
            system=SYSTEM,
            operation=operation,
            retry_after=response.headers.get("retry-after"),
            remote_code=code,
            remote_answer=answer,
        )


__all__ = [
    "CREDIT_APPLIED_TAG",
    "CREDIT_FIELD_TITLES",
    "ENTITLEMENT_FIELDS",
    "PAID_THROUGH_FIELD",
    "PLAN_FIELD",
    "STATUS_FIELD",
    "SUBSCRIPTION_FIELD",
    "ZendeskSupport",
    "without_write_marker",
    "write_marker",
]

"""Tickets, their comments and custom fields (`/api/v2/tickets`, `/api/v2/ticket_fields`).

Basic Zendesk semantics: a ticket is created with its first comment (its description);
PUT changes fields, replaces `tags` or adds/removes with `additional_tags`/`remove_tags`,
merges `custom_fields` by id and appends a `comment`; closed tickets refuse updates.
Ticket creation honours `Idempotency-Key` (same key + same request = the first answer
replayed, nothing created twice), the only place Zendesk documents it: an update with a key
is applied again, as Zendesk does. Comments list newest first with `sort=-created_at`.

Credit requests. The sandbox seeds the ticket fields support agents use to ask for a
credit (`CREDIT_FIELDS`: "Credit amount" (decimal, sent as a string like "120.00"),
"Credit currency", "Credit reason", "Incident reference"). Zendesk has no "credit
requested" event; setting a custom field (on create or update) emits the real
`zen:event-type:ticket.custom_field_changed`, one per field that changed, shaped:

    {"type": "zen:event-type:ticket.custom_field_changed",
     "subject": "zen:ticket:{ticket_id}",
     "detail": {"id": "{ticket_id}", "organization_id": "{org_id}" | null, ...},
     "event": {"current": "120.00", "previous": null,
               "field": {"id": "{field_id}", "title": "Credit amount", "type": "decimal"}}}

An ingress recognises "a credit was requested" by keying on: `type` ==
`zen:event-type:ticket.custom_field_changed`, `event.field.title` == "Credit amount" (or,
sturdier, `event.field.id` == that field's id resolved once from
`GET /api/v2/ticket_fields.json`) and a non-empty `event.current`; the case is
`detail.id` and the customer's organization `detail.organization_id`. The event `id` is
the dedupe key (it is the same on every delivery attempt). The ingress should then read
the ticket (the currency, reason and incident fields may arrive as separate events, in
any order) rather than trust the event alone.
"""

from __future__ import annotations

import html
from typing import Any

from fastapi import APIRouter, Request, Response

from sandbox.support._http import (
    api_url,
    idempotent,
    json_response,
    normalize_tags,
    not_found,
    not_idempotent,
    now_iso,
    paginate,
    parse_body,
    record_invalid,
)
from sandbox.support._store import SupportStore
from sandbox.support._webhooks import WebhookDispatcher

TICKET = "ticket"
COMMENT = "ticket_comment"
TICKET_FIELD = "ticket_field"
# The API user (the integration) authors comments when the request names no author.
API_USER_ID = 1

STATUSES = ("new", "open", "pending", "hold", "solved", "closed")
PRIORITIES = ("urgent", "high", "normal", "low")
TYPES = ("problem", "incident", "question", "task")
FIELD_TYPES = ("text", "textarea", "checkbox", "date", "integer", "decimal", "regexp", "tagger")
# Ticket fields every sandbox has from the start: what an agent fills in to ask for a credit.
CREDIT_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("Credit amount", "decimal", "Credit asked for the customer, e.g. 120.00"),
    ("Credit currency", "text", "ISO 4217 code of the credit amount, e.g. EUR"),
    ("Credit reason", "textarea", "Why the customer should be credited"),
    ("Incident reference", "text", "The incident the credit compensates, if any"),
)


def seed_ticket_fields(store: SupportStore) -> None:
    """Create the `CREDIT_FIELDS` that do not exist yet (by title; a restart adds none)."""
    with store.transaction():
        titles = {field["title"] for field in store.find(TICKET_FIELD)}
        for title, field_type, description in CREDIT_FIELDS:
            if title in titles:
                continue
            stamp = now_iso()
            store.insert(
                TICKET_FIELD,
                {
                    "type": field_type,
                    "title": title,
                    "description": description,
                    "active": True,
                    "required": False,
                    "tag": None,
                    "custom_field_options": [],
                    "created_at": stamp,
                    "updated_at": stamp,
                },
            )


def _choice(field: str, value: Any, allowed: tuple[str, ...], nullable: bool) -> str | None:
    if value is None and nullable:
        return None
    if not isinstance(value, str) or value not in allowed:
        raise record_invalid(field, f"must be one of {', '.join(allowed)}", "InvalidValue")
    return value


def _optional_id(field: str, value: Any) -> int | None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise record_invalid(field, "is invalid", "InvalidValue")
    return value


def _custom_fields(value: Any) -> dict[str, Any]:
    """`[{"id": 123, "value": ...}]` as `{"123": value}` (JSON object keys are strings)."""
    if value is None:
        return {}
    if not isinstance(value, list):
        raise record_invalid("custom_fields", "must be a list", "InvalidValue")
    values: dict[str, Any] = {}
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("id"), int):
            raise record_invalid("custom_fields", "items need an integer id", "InvalidValue")
        values[str(item["id"])] = item.get("value")
    return values


def _comment_fields(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise record_invalid("comment", "is invalid", "InvalidValue")
    body = value.get("body", value.get("html_body"))
    if not isinstance(body, str) or not body.strip():
        raise record_invalid("comment", "cannot be blank", "BlankValue")
    public = value.get("public", True)
    if not isinstance(public, bool):
        raise record_invalid("comment", "public must be a boolean", "InvalidValue")
    author_id = _optional_id("author_id", value.get("author_id")) or API_USER_ID
    return {"body": body, "public": public, "author_id": author_id}


def render_ticket(store: SupportStore, request: Request, ticket: dict[str, Any]) -> dict[str, Any]:
    """A stored ticket as the API shows it."""
    values = ticket["custom_fields"]
    # Fields set on this ticket, in definition order. Zendesk lists every active field
    # (null when unset); listing only the set ones keeps seeded fields out of tickets
    # that never used them. Readers must accept both shapes.
    defined = [str(field["id"]) for field in store.find(TICKET_FIELD)]
    ids = [key for key in defined if key in values]
    ids += [key for key in values if key not in defined]
    custom = [{"id": int(key), "value": values.get(key)} for key in ids]
    return {
        "url": api_url(request, f"/api/v2/tickets/{ticket['id']}.json"),
        **ticket,
        "custom_fields": custom,
        "fields": custom,
    }


def tickets_router(store: SupportStore, webhooks: WebhookDispatcher) -> APIRouter:
    router = APIRouter(prefix="/api/v2")
    seed_ticket_fields(store)

    def load(ticket_id: int) -> dict[str, Any]:
        ticket = store.get(TICKET, ticket_id)
        if ticket is None:
            raise not_found()
        return ticket

    def check_organization(organization_id: int | None) -> None:
        if organization_id is not None and store.get("organization", organization_id) is None:
            raise record_invalid("organization_id", "is invalid", "InvalidValue")

    def render(request: Request, ticket: dict[str, Any]) -> dict[str, Any]:
        return render_ticket(store, request, ticket)

    def render_comment(comment: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in comment.items() if key != "ticket_id"}

    def event_detail(ticket: dict[str, Any]) -> dict[str, Any]:
        """The ticket as Zendesk events carry it (ids as strings)."""

        def as_str(value: Any) -> str | None:
            return None if value is None else str(value)

        return {
            "actor_id": str(API_USER_ID),
            "assignee_id": as_str(ticket["assignee_id"]),
            "created_at": ticket["created_at"],
            "description": ticket["description"],
            "external_id": ticket["external_id"],
            "group_id": as_str(ticket["group_id"]),
            "id": str(ticket["id"]),
            "is_public": ticket["is_public"],
            "organization_id": as_str(ticket["organization_id"]),
            "priority": ticket["priority"],
            "requester_id": as_str(ticket["requester_id"]),
            "status": ticket["status"],
            "subject": ticket["subject"],
            "submitter_id": as_str(ticket["submitter_id"]),
            "tags": ticket["tags"],
            "type": ticket["type"],
            "updated_at": ticket["updated_at"],
            "via": ticket["via"],
        }

    def add_comment(ticket: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
        return store.insert(
            COMMENT,
            {
                "ticket_id": ticket["id"],
                "type": "Comment",
                "author_id": fields["author_id"],
                "body": fields["body"],
                "html_body": f"<p>{html.escape(fields['body'])}</p>",
                "plain_body": fields["body"],
                "public": fields["public"],
                "attachments": [],
                "via": {"channel": "api"},
                "created_at": ticket["updated_at"],
            },
        )

    def emit_comment(ticket: dict[str, Any], comment: dict[str, Any]) -> None:
        webhooks.emit(
            "ticket.comment_added",
            f"zen:ticket:{ticket['id']}",
            event_detail(ticket),
            {
                "comment": {
                    "id": str(comment["id"]),
                    "body": comment["body"],
                    "is_public": comment["public"],
                    "author": {"id": str(comment["author_id"]), "is_staff": True},
                }
            },
        )

    def apply_fields(ticket: dict[str, Any], body: dict[str, Any]) -> None:
        """Validated writable fields of a create or update, applied onto `ticket`."""
        if "subject" in body:
            if body["subject"] is not None and not isinstance(body["subject"], str):
                raise record_invalid("subject", "is invalid", "InvalidValue")
            ticket["subject"] = ticket["raw_subject"] = body["subject"] or ""
        if "status" in body:
            ticket["status"] = _choice("status", body["status"], STATUSES, nullable=False)
        if "priority" in body:
            ticket["priority"] = _choice("priority", body["priority"], PRIORITIES, True)
        if "type" in body:
            ticket["type"] = _choice("type", body["type"], TYPES, nullable=True)
        for field in ("organization_id", "requester_id", "assignee_id", "group_id"):
            if field in body:
                ticket[field] = _optional_id(field, body[field])
        if "organization_id" in body:
            check_organization(ticket["organization_id"])
        if "external_id" in body:
            if body["external_id"] is not None and not isinstance(body["external_id"], str):
                raise record_invalid("external_id", "is invalid", "InvalidValue")
            ticket["external_id"] = body["external_id"] or None
        if "tags" in body:
            ticket["tags"] = normalize_tags(body["tags"])
        for tag in normalize_tags(body.get("additional_tags"), "additional_tags"):
            if tag not in ticket["tags"]:
                ticket["tags"] = [*ticket["tags"], tag]
        removed = normalize_tags(body.get("remove_tags"), "remove_tags")
        ticket["tags"] = [tag for tag in ticket["tags"] if tag not in removed]
        custom = body.get("custom_fields", body.get("fields"))
        if custom is not None:
            ticket["custom_fields"] = {**ticket["custom_fields"], **_custom_fields(custom)}

    def emit_changes(before: dict[str, Any], after: dict[str, Any]) -> None:
        subject = f"zen:ticket:{after['id']}"
        detail = event_detail(after)
        for field, event_type in (
            ("status", "ticket.status_changed"),
            ("priority", "ticket.priority_changed"),
            ("subject", "ticket.subject_changed"),
            ("type", "ticket.type_changed"),
            ("organization_id", "ticket.organization_changed"),
            ("group_id", "ticket.group_assignment_changed"),
            ("assignee_id", "ticket.agent_assignment_changed"),
            ("external_id", "ticket.external_id_changed"),
        ):
            if before[field] != after[field]:
                webhooks.emit(
                    event_type,
                    subject,
                    detail,
                    {"current": after[field], "previous": before[field]},
                )
        added = [tag for tag in after["tags"] if tag not in before["tags"]]
        removed = [tag for tag in before["tags"] if tag not in after["tags"]]
        if added or removed:
            webhooks.emit(
                "ticket.tags_changed",
                subject,
                detail,
                {"tags_added": added, "tags_removed": removed},
            )
        emit_custom_field_changes(before["custom_fields"], after, detail)

    def emit_custom_field_changes(
        old: dict[str, Any], ticket: dict[str, Any], detail: dict[str, Any]
    ) -> None:
        """One `ticket.custom_field_changed` per field whose value changed (see module doc)."""
        new = ticket["custom_fields"]
        for key in sorted(set(old) | set(new), key=int):
            if old.get(key) == new.get(key):
                continue
            definition = store.get(TICKET_FIELD, int(key)) or {}
            webhooks.emit(
                "ticket.custom_field_changed",
                f"zen:ticket:{ticket['id']}",
                detail,
                {
                    "current": new.get(key),
                    "previous": old.get(key),
                    "field": {
                        "id": key,
                        "title": definition.get("title"),
                        "type": definition.get("type"),
                    },
                },
            )

    # -- tickets ---------------------------------------------------------------------

    @router.post("/tickets")
    async def create_ticket(request: Request) -> Response:
        def create(raw: bytes) -> tuple[int, dict[str, Any]]:
            body = parse_body(raw, "ticket")
            if "comment" not in body:
                raise record_invalid("description", "cannot be blank", "BlankValue")
            comment = _comment_fields(body["comment"])
            stamp = now_iso()
            ticket: dict[str, Any] = {
                "external_id": None,
                "type": None,
                "subject": "",
                "raw_subject": "",
                "description": comment["body"],
                "priority": None,
                "status": "new",
                "requester_id": API_USER_ID,
                "submitter_id": API_USER_ID,
                "assignee_id": None,
                "organization_id": None,
                "group_id": None,
                "is_public": comment["public"],
                "tags": [],
                "custom_fields": {},
                "via": {"channel": "api"},
                "created_at": stamp,
                "updated_at": stamp,
            }
            apply_fields(ticket, body)
            if ticket["organization_id"] is None and isinstance(body.get("requester"), dict):
                ticket["organization_id"] = _optional_id(
                    "organization_id", body["requester"].get("organization_id")
                )
                check_organization(ticket["organization_id"])
            with store.transaction():
                ticket = store.insert(TICKET, ticket)
                add_comment(ticket, comment)
                detail = event_detail(ticket)
                webhooks.emit("ticket.created", f"zen:ticket:{ticket['id']}", detail)
                # Fields filled in at creation change from nothing: a credit asked on a new
                # ticket is announced like one added later.
                emit_custom_field_changes({}, ticket, detail)
            return 201, {"ticket": render(request, ticket)}

        return await idempotent(request, store, create)

    @router.get("/tickets")
    async def list_tickets(request: Request) -> Response:
        return json_response(
            200, paginate(request, store, TICKET, "tickets", lambda t: render(request, t))
        )

    @router.get("/organizations/{org_id:int}/tickets")
    async def list_organization_tickets(request: Request, org_id: int) -> Response:
        if store.get("organization", org_id) is None:
            raise not_found()
        return json_response(
            200,
            paginate(
                request,
                store,
                TICKET,
                "tickets",
                lambda t: render(request, t),
                organization_id=org_id,
            ),
        )

    @router.get("/tickets/{ticket_id:int}")
    async def show_ticket(request: Request, ticket_id: int) -> Response:
        return json_response(200, {"ticket": render(request, load(ticket_id))})

    @router.put("/tickets/{ticket_id:int}")
    async def update_ticket(request: Request, ticket_id: int) -> Response:
        def update(raw: bytes) -> tuple[int, dict[str, Any]]:
            body = parse_body(raw, "ticket")
            comment_fields = _comment_fields(body["comment"]) if "comment" in body else None
            with store.transaction():
                before = load(ticket_id)
                if before["status"] == "closed":
                    raise record_invalid("status", "closed prevents ticket update", "InvalidValue")
                after = {**before, "tags": list(before["tags"])}
                apply_fields(after, body)
                if after != before or comment_fields is not None:
                    after["updated_at"] = now_iso()
                    store.replace(TICKET, after)
                    emit_changes(before, after)
                    if comment_fields is not None:
                        emit_comment(after, add_comment(after, comment_fields))
            return 200, {"ticket": render(request, after)}

        return await not_idempotent(request, update)

    @router.get("/tickets/{ticket_id:int}/comments")
    async def list_comments(request: Request, ticket_id: int) -> Response:
        load(ticket_id)
        return json_response(
            200,
            paginate(
                request,
                store,
                COMMENT,
                "comments",
                render_comment,
                sortable=True,
                ticket_id=ticket_id,
            ),
        )

    # -- ticket fields (custom field definitions) --------------------------------------

    @router.post("/ticket_fields")
    async def create_ticket_field(request: Request) -> Response:
        def create(raw: bytes) -> tuple[int, dict[str, Any]]:
            body = parse_body(raw, "ticket_field")
            title = body.get("title")
            if not isinstance(title, str) or not title.strip():
                raise record_invalid("title", "cannot be blank", "BlankValue")
            field_type = _choice("type", body.get("type"), FIELD_TYPES, nullable=False)
            stamp = now_iso()
            with store.transaction():
                field = store.insert(
                    TICKET_FIELD,
                    {
                        "type": field_type,
                        "title": title.strip(),
                        "description": body.get("description") or "",
                        "active": True,
                        "required": bool(body.get("required", False)),
                        "tag": body.get("tag"),
                        "custom_field_options": body.get("custom_field_options") or [],
                        "created_at": stamp,
                        "updated_at": stamp,
                    },
                )
            return 201, {
                "ticket_field": {
                    "url": api_url(request, f"/api/v2/ticket_fields/{field['id']}.json"),
                    **field,
                }
            }

        return await not_idempotent(request, create)

    @router.get("/ticket_fields")
    async def list_ticket_fields(request: Request) -> Response:
        fields = [
            {"url": api_url(request, f"/api/v2/ticket_fields/{field['id']}.json"), **field}
            for field in store.find(TICKET_FIELD)
        ]
        return json_response(200, {"ticket_fields": fields, "count": len(fields)})

    @router.get("/ticket_fields/{field_id:int}")
    async def show_ticket_field(request: Request, field_id: int) -> Response:
        field = store.get(TICKET_FIELD, field_id)
        if field is None:
            raise not_found()
        url = api_url(request, f"/api/v2/ticket_fields/{field_id}.json")
        return json_response(200, {"ticket_field": {"url": url, **field}})

    return router


__all__ = ["CREDIT_FIELDS", "TICKET", "render_ticket", "seed_ticket_fields", "tickets_router"]

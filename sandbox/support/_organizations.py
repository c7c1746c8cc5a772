"""Organizations (`/api/v2/organizations`): a customer is an organization whose external_id is
the canonical customer id. Names and external ids are unique, as in Zendesk, which keeps no
idempotency for organizations (an Idempotency-Key is ignored).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from sandbox.support._http import (
    ZendeskError,
    api_url,
    json_response,
    normalize_tags,
    not_found,
    not_idempotent,
    now_iso,
    paginate,
    parse_body,
    record_invalid,
)
from sandbox.support._organization_fields import checked_values, rendered_values
from sandbox.support._store import SupportStore
from sandbox.support._webhooks import WebhookDispatcher

KIND = "organization"

# Fields a client may write, with the default a new organization gets.
_WRITABLE: dict[str, Any] = {
    "name": None,
    "external_id": None,
    "details": "",
    "notes": "",
    "domain_names": [],
    "group_id": None,
    "shared_tickets": False,
    "shared_comments": False,
    "tags": [],
    "organization_fields": {},
}


def _clean(fields: dict[str, Any]) -> dict[str, Any]:
    """Validated writable fields of a request (unknown fields are ignored, as Zendesk does)."""
    clean: dict[str, Any] = {}
    for field, value in fields.items():
        if field not in _WRITABLE:
            continue
        if field == "name":
            if not isinstance(value, str) or not value.strip():
                raise record_invalid("name", "cannot be blank", "BlankValue")
            value = value.strip()
        elif field == "external_id":
            if isinstance(value, int) and not isinstance(value, bool):
                value = str(value)
            if value is not None and not isinstance(value, str):
                raise record_invalid("external_id", "is invalid", "InvalidValue")
            value = value or None
        elif field in ("details", "notes"):
            if value is None:
                value = ""
            if not isinstance(value, str):
                raise record_invalid(field, "is invalid", "InvalidValue")
        elif field in ("tags", "domain_names"):
            value = normalize_tags(value, field)
        elif field == "group_id":
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise record_invalid("group_id", "is invalid", "InvalidValue")
        elif field in ("shared_tickets", "shared_comments"):
            if not isinstance(value, bool):
                raise record_invalid(field, "is invalid", "InvalidValue")
        elif field == "organization_fields":
            if value is None:
                value = {}
            if not isinstance(value, dict):
                raise record_invalid("organization_fields", "is invalid", "InvalidValue")
        clean[field] = value
    return clean


def _check_unique(store: SupportStore, org: dict[str, Any]) -> None:
    for other in store.find(KIND):
        if other["id"] == org.get("id"):
            continue
        if other["name"].casefold() == org["name"].casefold():
            raise record_invalid("name", "has already been taken", "DuplicateValue")
        if org["external_id"] is not None and other.get("external_id") == org["external_id"]:
            raise record_invalid("external_id", "has already been taken", "DuplicateValue")


def _event_detail(org: dict[str, Any]) -> dict[str, Any]:
    """The organization as Zendesk events carry it (ids as strings)."""
    return {
        "created_at": org["created_at"],
        "external_id": org["external_id"],
        "group_id": None if org["group_id"] is None else str(org["group_id"]),
        "id": str(org["id"]),
        "name": org["name"],
        "shared_comments": org["shared_comments"],
        "shared_tickets": org["shared_tickets"],
        "updated_at": org["updated_at"],
    }


def _emit_changes(
    webhooks: WebhookDispatcher, before: dict[str, Any], after: dict[str, Any]
) -> None:
    """One event per kind of change, named as Zendesk names its organization events."""
    subject = f"zen:organization:{after['id']}"
    detail = _event_detail(after)
    for field, event_type in (
        ("name", "organization.name_changed"),
        ("external_id", "organization.external_id_changed"),
        ("group_id", "organization.group_changed"),
    ):
        if before[field] != after[field]:
            webhooks.emit(
                event_type, subject, detail, {"current": after[field], "previous": before[field]}
            )
    added = [tag for tag in after["tags"] if tag not in before["tags"]]
    removed = [tag for tag in before["tags"] if tag not in after["tags"]]
    if added or removed:
        webhooks.emit(
            "organization.tags_changed",
            subject,
            detail,
            {"tags_added": added, "tags_removed": removed},
        )
    old_fields, new_fields = before["organization_fields"], after["organization_fields"]
    for key in sorted(set(old_fields) | set(new_fields)):
        if old_fields.get(key) != new_fields.get(key):
            webhooks.emit(
                "organization.custom_field_changed",
                subject,
                detail,
                {
                    "current": new_fields.get(key),
                    "previous": old_fields.get(key),
                    "field": {"key": key},
                },
            )


def organizations_router(store: SupportStore, webhooks: WebhookDispatcher) -> APIRouter:
    router = APIRouter(prefix="/api/v2")

    def render(request: Request, org: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": api_url(request, f"/api/v2/organizations/{org['id']}.json"),
            **org,
            "organization_fields": rendered_values(store, org["organization_fields"]),
        }

    def load(org_id: int) -> dict[str, Any]:
        org = store.get(KIND, org_id)
        if org is None:
            raise not_found()
        return org

    @router.post("/organizations")
    async def create_organization(request: Request) -> Response:
        def create(raw: bytes) -> tuple[int, dict[str, Any]]:
            fields = _clean(parse_body(raw, "organization"))
            if "name" not in fields:
                raise record_invalid("name", "cannot be blank", "BlankValue")
            stamp = now_iso()
            with store.transaction():
                org = {
                    **_WRITABLE,
                    **fields,
                    "organization_fields": checked_values(store, fields.get("organization_fields")),
                    "created_at": stamp,
                    "updated_at": stamp,
                }
                _check_unique(store, org)
                org = store.insert(KIND, org)
                webhooks.emit(
                    "organization.created", f"zen:organization:{org['id']}", _event_detail(org)
                )
            return 201, {"organization": render(request, org)}

        return await not_idempotent(request, create)

    @router.get("/organizations")
    async def list_organizations(request: Request) -> Response:
        return json_response(
            200, paginate(request, store, KIND, "organizations", lambda o: render(request, o))
        )

    @router.get("/organizations/search")
    async def search_organizations(request: Request) -> Response:
        external_id = request.query_params.get("external_id")
        name = request.query_params.get("name")
        if external_id is None and name is None:
            raise ZendeskError(400, "InvalidParameter", "Provide external_id or name")
        found = store.find(KIND, external_id=external_id) if external_id else store.find(KIND)
        if name is not None:
            found = [org for org in found if org["name"].casefold() == name.strip().casefold()]
        organizations = [render(request, org) for org in found]
        return json_response(
            200,
            {
                "organizations": organizations,
                "next_page": None,
                "previous_page": None,
                "count": len(organizations),
            },
        )

    @router.get("/organizations/{org_id:int}")
    async def show_organization(request: Request, org_id: int) -> Response:
        return json_response(200, {"organization": render(request, load(org_id))})

    @router.put("/organizations/{org_id:int}")
    async def update_organization(request: Request, org_id: int) -> Response:
        fields = _clean(parse_body(await request.body(), "organization"))
        with store.transaction():
            before = load(org_id)
            after = {**before, **fields}
            if "organization_fields" in fields:
                # Zendesk merges custom fields: keys not sent keep their value; keys no field
                # defines are dropped, a malformed value refuses the whole update.
                after["organization_fields"] = {
                    **before["organization_fields"],
                    **checked_values(store, fields["organization_fields"]),
                }
            if after != before:
                after["updated_at"] = now_iso()
                _check_unique(store, after)
                store.replace(KIND, after)
                _emit_changes(webhooks, before, after)
        return json_response(200, {"organization": render(request, after)})

    @router.delete("/organizations/{org_id:int}")
    async def delete_organization(org_id: int) -> Response:
        with store.transaction():
            org = load(org_id)
            store.delete(KIND, org_id)
            webhooks.emit("organization.deleted", f"zen:organization:{org_id}", _event_detail(org))
        return Response(status_code=204)

    return router


__all__ = ["KIND", "organizations_router"]

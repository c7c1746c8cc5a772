"""Organization fields (`/api/v2/organization_fields`): the custom fields an organization
carries under `organization_fields: {key: value}`, as Zendesk defines them.

A field has a unique `key` (letters, digits and underscores, not only digits; never reused,
even after the field is deleted), a `title` and a `type` (text when none is given);
a dropdown needs `custom_field_options`, each a `name` shown to agents and a `value` (the
tag) that the organization stores. Values written to an organization are checked against
their field's type: a malformed one is a 422 RecordInvalid and nothing changes. A key no
field defines is dropped silently, as Zendesk's permissive REST API drops attributes it does
not know ("REST API gives 200 response but the request didn't work"): a client must compare
the answer with what it sent. Reads list every active field's key, null when unset; a date
is answered as midnight UTC (`2026-05-31T00:00:00+00:00`), as Zendesk's examples show.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any

from fastapi import APIRouter, Request, Response

from sandbox.support._http import (
    ZendeskError,
    api_url,
    json_response,
    not_found,
    now_iso,
    paginate,
    parse_body,
    record_invalid,
)
from sandbox.support._store import SupportStore

FIELD = "organization_field"
# Keys of deleted fields: Zendesk never gives a key out twice.
RETIRED_KEY = "organization_field_retired_key"

FIELD_TYPES = (
    "text", "textarea", "checkbox", "date", "integer", "decimal", "regexp", "dropdown",
)  # fmt: skip
_KEY = re.compile(r"^[A-Za-z0-9_]+$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")


def _options(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise record_invalid(
            "custom_field_options", "a dropdown needs at least one option", "BlankValue"
        )
    options, seen = [], set()
    for option in value:
        if not isinstance(option, dict):
            raise record_invalid("custom_field_options", "is invalid", "InvalidValue")
        name, tag = option.get("name"), option.get("value")
        if not isinstance(name, str) or not name.strip():
            raise record_invalid("custom_field_options", "an option needs a name", "BlankValue")
        if not isinstance(tag, str) or not tag.strip() or " " in tag.strip():
            raise record_invalid(
                "custom_field_options", "an option needs a value without spaces", "InvalidValue"
            )
        tag = tag.strip().lower()
        if tag in seen:
            raise record_invalid(
                "custom_field_options", f"value {tag} is used twice", "DuplicateValue"
            )
        seen.add(tag)
        options.append({"name": name.strip(), "value": tag})
    return options


def defined_fields(store: SupportStore) -> list[dict[str, Any]]:
    """Active organization fields in their display order."""
    fields = [field for field in store.find(FIELD) if field["active"]]
    return sorted(fields, key=lambda field: (field["position"], field["id"]))


def _checked_value(field: dict[str, Any], value: Any) -> Any:
    """The value as stored, or Zendesk's 422 naming the field."""
    key, kind = field["key"], field["type"]
    if value is None or value == "":
        return None

    def invalid(problem: str) -> ZendeskError:
        return record_invalid(key, f"{field['title']} {problem}", "InvalidValue")

    if kind in ("text", "textarea", "regexp"):
        if not isinstance(value, str):
            raise invalid("is not text")
        pattern = field.get("regexp_for_validation")
        if kind == "regexp" and pattern and re.fullmatch(pattern, value) is None:
            raise invalid("does not match its pattern")
        return value
    if kind == "checkbox":
        if not isinstance(value, bool):
            raise invalid("is not true or false")
        return value
    if kind == "integer":
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise invalid("is not an integer")
        return value
    if kind == "decimal":
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise invalid("is not a decimal number") from None
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise invalid("is not a decimal number")
        return value
    if kind == "date":
        if not isinstance(value, str) or _DATE.match(value) is None:
            raise invalid("is not a valid date")
        try:
            day = date.fromisoformat(value[:10])
            if len(value) > 10:
                datetime.fromisoformat(value)
        except ValueError:
            raise invalid("is not a valid date") from None
        return day.isoformat()
    if kind == "dropdown":
        tags = [option["value"] for option in field["custom_field_options"]]
        if not isinstance(value, str) or value.strip().lower() not in tags:
            raise invalid("is not one of its options")
        return value.strip().lower()
    raise invalid("has a type the sandbox does not know")


def checked_values(store: SupportStore, raw: Any) -> dict[str, Any]:
    """An organization's `organization_fields` as stored: values checked by type, keys no
    active field defines dropped (Zendesk ignores what it does not know)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise record_invalid("organization_fields", "is invalid", "InvalidValue")
    by_key = {field["key"]: field for field in defined_fields(store)}
    return {key: _checked_value(by_key[key], value) for key, value in raw.items() if key in by_key}


def rendered_values(store: SupportStore, stored: dict[str, Any]) -> dict[str, Any]:
    """Every active field's key with the organization's value, null when unset."""
    values: dict[str, Any] = {}
    for field in defined_fields(store):
        value = stored.get(field["key"])
        if field["type"] == "date" and value is not None:
            value = f"{value}T00:00:00+00:00"
        values[field["key"]] = value
    return values


def _new_field(store: SupportStore, body: dict[str, Any]) -> dict[str, Any]:
    key, title = body.get("key"), body.get("title")
    if not isinstance(key, str) or not key:
        raise record_invalid("key", "cannot be blank", "BlankValue")
    if _KEY.match(key) is None or key.isdigit():
        raise record_invalid(
            "key", "may hold only letters, numbers and underscores, not only numbers",
            "InvalidValue",
        )  # fmt: skip
    if not isinstance(title, str) or not title.strip():
        raise record_invalid("title", "cannot be blank", "BlankValue")
    kind = body.get("type", "text")
    if kind not in FIELD_TYPES:
        raise record_invalid("type", f"must be one of {', '.join(FIELD_TYPES)}", "InvalidValue")
    if store.find(FIELD, key=key) or store.find(RETIRED_KEY, key=key):
        raise record_invalid("key", "has already been taken", "DuplicateValue")
    description = body.get("description") or ""
    if not isinstance(description, str):
        raise record_invalid("description", "is invalid", "InvalidValue")
    active = body.get("active", True)
    if not isinstance(active, bool):
        raise record_invalid("active", "is invalid", "InvalidValue")
    position = body.get("position", 9999)
    if not isinstance(position, int) or isinstance(position, bool):
        raise record_invalid("position", "is invalid", "InvalidValue")
    regexp = body.get("regexp_for_validation")
    if kind == "regexp":
        if not isinstance(regexp, str) or not regexp:
            raise record_invalid("regexp_for_validation", "cannot be blank", "BlankValue")
        try:
            re.compile(regexp)
        except re.error:
            raise record_invalid("regexp_for_validation", "is invalid", "InvalidValue") from None
    else:
        regexp = None
    stamp = now_iso()
    field: dict[str, Any] = {
        "key": key,
        "type": kind,
        "title": title.strip(),
        "raw_title": title.strip(),
        "description": description,
        "raw_description": description,
        "position": position,
        "active": active,
        "system": False,
        "regexp_for_validation": regexp,
        "created_at": stamp,
        "updated_at": stamp,
    }
    if kind == "dropdown":
        field["custom_field_options"] = _options(body.get("custom_field_options"))
    return field


def organization_fields_router(store: SupportStore) -> APIRouter:
    router = APIRouter(prefix="/api/v2")

    def render(request: Request, field: dict[str, Any]) -> dict[str, Any]:
        url = api_url(request, f"/api/v2/organization_fields/{field['id']}.json")
        rendered = {"url": url, **field}
        if "custom_field_options" in rendered:
            rendered["custom_field_options"] = [
                {"id": field["id"] * 100 + n, **option}
                for n, option in enumerate(field["custom_field_options"], start=1)
            ]
        return rendered

    def load(field_ref: str) -> dict[str, Any]:
        """By id or by key: Zendesk's field endpoints take either."""
        found = (
            store.get(FIELD, int(field_ref))
            if field_ref.isdigit()
            else next(iter(store.find(FIELD, key=field_ref)), None)
        )
        if found is None:
            raise not_found()
        return found

    @router.post("/organization_fields")
    async def create_field(request: Request) -> Response:
        body = parse_body(await request.body(), "organization_field")
        with store.transaction():
            field = store.insert(FIELD, _new_field(store, body))
        return json_response(201, {"organization_field": render(request, field)})

    @router.get("/organization_fields")
    async def list_fields(request: Request) -> Response:
        return json_response(
            200,
            paginate(request, store, FIELD, "organization_fields", lambda f: render(request, f)),
        )

    @router.get("/organization_fields/{field_ref}")
    async def show_field(request: Request, field_ref: str) -> Response:
        return json_response(200, {"organization_field": render(request, load(field_ref))})

    @router.delete("/organization_fields/{field_ref}")
    async def delete_field(field_ref: str) -> Response:
        with store.transaction():
            field = load(field_ref)
            store.delete(FIELD, field["id"])
            store.insert(RETIRED_KEY, {"key": field["key"]})
        return Response(status_code=204)

    return router


__all__ = [
    "FIELD",
    "FIELD_TYPES",
    "checked_values",
    "defined_fields",
    "organization_fields_router",
    "rendered_values",
]

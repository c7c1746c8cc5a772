"""JSON Schemas of the canonical models, versioned and checked in under canonical/schemas/.

`python -m canonical.schema_registry` rewrites the files for the current versions. A model
whose shape changes incompatibly must bump its SCHEMA_VERSION; tests/unit/canonical enforces it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from canonical.billing import BillingDocument, LedgerPosting, PostedDocument, Subscription
from canonical.credit import CreditRequest
from canonical.customer import AccountRecord, Customer
from canonical.entitlements import Entitlements
from canonical.events import BusinessEvent
from canonical.facts import FACTS
from canonical.finance import ExceptionContext, FinanceDecision
from canonical.money import Money
from canonical.payments import Payment, PaymentPosting, PostedPayment, Refund
from canonical.support import SupportCase

SCHEMA_DIR = Path(__file__).parent / "schemas"

VERSIONED_MODELS: tuple[type[BaseModel], ...] = (
    Money,
    Customer,
    AccountRecord,
    BusinessEvent,
    BillingDocument,
    Subscription,
    LedgerPosting,
    PostedDocument,
    ExceptionContext,
    FinanceDecision,
    CreditRequest,
    SupportCase,
    Payment,
    Refund,
    PaymentPosting,
    PostedPayment,
    Entitlements,
    *FACTS,  # the data of each event out (adapters/events)
)


def schema_path(model: type[BaseModel]) -> Path:
    return SCHEMA_DIR / f"{model.__name__}.v{model.SCHEMA_VERSION}.json"  # type: ignore[attr-defined]


def current_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(mode="validation")
    schema["x-schema-version"] = model.SCHEMA_VERSION  # type: ignore[attr-defined]
    return schema


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def export() -> list[Path]:
    SCHEMA_DIR.mkdir(exist_ok=True)
    written = []
    for model in VERSIONED_MODELS:
        path = schema_path(model)
        path.write_text(render(current_schema(model)))
        written.append(path)
    return written


def incompatibilities(old: dict[str, Any], new: dict[str, Any], where: str = "") -> list[str]:
    """Ways a reader of `new` would fail on data written under `old` (or the reverse).

    Compatible: adding an optional property, relaxing nothing else. Incompatible: removing or
    retyping a property, making a property required, changing a nested definition likewise.
    """
    problems: list[str] = []
    old_props: dict[str, Any] = old.get("properties", {})
    new_props: dict[str, Any] = new.get("properties", {})
    for name, old_prop in old_props.items():
        if name not in new_props:
            problems.append(f"{where}{name}: removed")
        elif _type_signature(old_prop) != _type_signature(new_props[name]):
            problems.append(f"{where}{name}: type changed")
    for name in set(new.get("required", [])) - set(old.get("required", [])):
        problems.append(f"{where}{name}: now required")
    old_defs: dict[str, Any] = old.get("$defs", {})
    new_defs: dict[str, Any] = new.get("$defs", {})
    for name, old_def in old_defs.items():
        if name not in new_defs:
            problems.append(f"{where}$defs.{name}: removed")
        else:
            problems.extend(incompatibilities(old_def, new_defs[name], f"{where}{name}."))
    return problems


def _type_signature(prop: dict[str, Any]) -> Any:
    """The parts of a property schema that decide what values it accepts."""
    keys = ("type", "$ref", "anyOf", "allOf", "enum", "const", "format", "items", "pattern")
    return json.dumps({k: prop[k] for k in keys if k in prop}, sort_keys=True)


if __name__ == "__main__":
    for written in export():
        print(written.relative_to(SCHEMA_DIR.parent.parent))

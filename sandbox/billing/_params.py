"""Stripe's form parameters: bracket-notation decoding and small declarative validators.

`metadata[plan]=pro&address[line1]=1 Main St&items[0][price]=price_1&expand[]=customer`
decodes to nested dicts; `[]` appends to a list. Indexed keys (`items[0]`) stay a dict of
digit strings because only the schema knows whether `metadata[0]` is a list or a key:
`as_list` turns them into a list where the schema expects one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sandbox.billing._currencies import CURRENCY_DECIMALS
from sandbox.billing._errors import missing_param, param_error, unknown_param

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART = re.compile(r"\[([^\[\]]*)\]")


def split_key(key: str) -> list[str]:
    """`items[0][price]` -> ["items", "0", "price"]; `expand[]` -> ["expand", ""]."""
    match = _KEY.match(key)
    if not match:
        raise param_error(f"Invalid parameter name: {key}", param=key)
    return [match.group(1), *_PART.findall(match.group(2))]


def decode_params(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Nested params from form/query pairs in bracket notation."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = split_key(key)
        node: Any = root
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            here = "".join([parts[0], *(f"[{p}]" for p in parts[1:depth])])
            if isinstance(node, list):
                if part != "":
                    raise param_error(f"Invalid array parameter: {key}", param=here)
                if last:
                    node.append(value)
                else:
                    child: Any = [] if parts[depth + 1] == "" else {}
                    node.append(child)
                    node = child
                continue
            if not isinstance(node, dict):
                raise param_error(f"Conflicting values for parameter: {here}", param=here)
            if part == "":
                raise param_error(f"Invalid array parameter: {key}", param=key)
            if last:
                if isinstance(node.get(part), dict | list):
                    raise param_error(f"Conflicting values for parameter: {key}", param=key)
                node[part] = value
            else:
                default: Any = [] if parts[depth + 1] == "" else {}
                existing = node.setdefault(part, default)
                if not isinstance(existing, dict | list):
                    raise param_error(f"Conflicting values for parameter: {key}", param=key)
                if isinstance(existing, list) != isinstance(default, list):
                    raise param_error(f"Conflicting values for parameter: {key}", param=key)
                node = existing
    return root


def as_list(value: Any, param: str) -> list[Any]:
    """A list from `a[]=x` (already a list) or `a[0]=x&a[1]=y` (a dict of indices)."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict) and all(k.isdigit() for k in value):
        return [value[k] for k in sorted(value, key=int)]
    raise param_error(f"Invalid array: {param}", param=param, code="parameter_invalid_array")


# A validator takes the raw decoded value and the parameter's display name and returns the
# clean value; None means "cleared" (Stripe's way to unset a field is to send it empty).
Validator = Callable[[Any, str], Any]


def string(max_length: int = 5000, *, clearable: bool = True) -> Validator:
    def check(value: Any, param: str) -> str | None:
        if not isinstance(value, str):
            raise param_error(f"Invalid string: {param}", param=param)
        if value == "":
            if clearable:
                return None
            raise param_error(
                f"You passed an empty string for '{param}'. We assume empty values are an "
                "attempt to unset a parameter; however '{param}' cannot be unset.",
                param=param,
                code="parameter_invalid_empty",
            )
        if len(value) > max_length:
            raise param_error(
                f"Invalid string: {param} must be at most {max_length} characters", param=param
            )
        return value

    return check


def email() -> Validator:
    base = string(512)

    def check(value: Any, param: str) -> str | None:
        clean = base(value, param)
        if clean is not None and ("@" not in clean or clean.startswith("@") or " " in clean):
            raise param_error(f"Invalid email address: {clean}", param=param, code="email_invalid")
        return clean

    return check


def url() -> Validator:
    base = string(2048, clearable=False)

    def check(value: Any, param: str) -> str:
        clean = base(value, param)
        if not isinstance(clean, str) or not clean.startswith(("http://", "https://")):
            raise param_error(f"Invalid URL: {value}", param=param, code="url_invalid")
        return clean

    return check


def boolean() -> Validator:
    def check(value: Any, param: str) -> bool:
        if value in ("true", True):
            return True
        if value in ("false", False):
            return False
        raise param_error(f"Invalid boolean: {value}", param=param)

    return check


def integer(minimum: int | None = None, maximum: int | None = None) -> Validator:
    def check(value: Any, param: str) -> int:
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise param_error(
                f"Invalid integer: {value}", param=param, code="parameter_invalid_integer"
            ) from None
        if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
            raise param_error(
                f"Invalid integer: {param} must be between {minimum} and {maximum}",
                param=param,
                code="parameter_invalid_integer",
            )
        return number

    return check


def currency() -> Validator:
    """A three-letter ISO code Stripe supports; answered lowercase as Stripe does."""

    def check(value: Any, param: str) -> str:
        if not isinstance(value, str) or value.upper() not in CURRENCY_DECIMALS:
            raise param_error(f"Invalid currency: {value}.", param=param)
        return value.lower()

    return check


def enum(*choices: str) -> Validator:
    def check(value: Any, param: str) -> str:
        if value not in choices:
            raise param_error(f"Invalid {param}: must be one of {', '.join(choices)}", param=param)
        return str(value)

    return check


def string_list(max_items: int = 100) -> Validator:
    item = string(5000, clearable=False)

    def check(value: Any, param: str) -> list[str]:
        values = as_list(value, param)
        if len(values) > max_items:
            raise param_error(f"Too many values for {param}", param=param)
        return [item(v, f"{param}[{i}]") for i, v in enumerate(values)]

    return check


def obj(schema: Mapping[str, Validator], *, clearable: bool = True) -> Validator:
    """A nested hash with known keys (address[line1]=...); "" clears the whole hash."""

    def check(value: Any, param: str) -> dict[str, Any] | None:
        if value == "" and clearable:
            return None
        if not isinstance(value, dict):
            raise param_error(f"Invalid hash: {param}", param=param, code="parameter_invalid_hash")
        return validate(value, schema, prefix=param)

    return check


def object_list(schema: Mapping[str, Validator], *, max_items: int = 20) -> Validator:
    """A list of hashes (`items[0][price]=...&items[1][price]=...`), each checked by schema."""

    def check(value: Any, param: str) -> list[dict[str, Any]]:
        values = as_list(value, param)
        if not values:
            raise param_error(f"{param} must not be empty", param=param)
        if len(values) > max_items:
            raise param_error(f"{param} may hold at most {max_items} entries", param=param)
        clean: list[dict[str, Any]] = []
        for index, item in enumerate(values):
            name = f"{param}[{index}]"
            if not isinstance(item, dict):
                raise param_error(
                    f"Invalid hash: {name}", param=name, code="parameter_invalid_hash"
                )
            clean.append(validate(item, schema, prefix=name))
        return clean

    return check


def metadata() -> Validator:
    """Stripe metadata: up to 50 string keys (40 chars) of string values (500 chars).

    `metadata=""` clears everything; `metadata[key]=""` removes one key (None here)."""

    def check(value: Any, param: str) -> dict[str, str | None] | None:
        if value == "":
            return None
        if not isinstance(value, dict):
            raise param_error(f"Invalid hash: {param}", param=param, code="parameter_invalid_hash")
        if len(value) > 50:
            raise param_error("Metadata can have at most 50 keys", param=param)
        clean: dict[str, str | None] = {}
        for key, item in value.items():
            name = f"{param}[{key}]"
            if len(key) > 40:
                raise param_error(f"Metadata keys must be at most 40 characters: {key}", param=name)
            if not isinstance(item, str):
                raise param_error(f"Invalid metadata value: {name}", param=name)
            if len(item) > 500:
                raise param_error(
                    f"Metadata values must be at most 500 characters: {name}", param=name
                )
            clean[key] = item if item != "" else None
        return clean

    return check


def merge_metadata(
    current: Mapping[str, str], update: Mapping[str, str | None] | None
) -> dict[str, str]:
    """Stripe merges metadata keys; None removes a key; a None update clears all."""
    if update is None:
        return {}
    merged = dict(current)
    for key, value in update.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


# Accepted everywhere and ignored: we serve no expansions yet, and the SDK may send them.
IGNORED = frozenset({"expand"})


def validate(
    params: Mapping[str, Any],
    schema: Mapping[str, Validator],
    *,
    required: Iterable[str] = (),
    prefix: str = "",
) -> dict[str, Any]:
    """Clean params per schema; unknown parameters are refused as Stripe does."""

    def name(key: str) -> str:
        return f"{prefix}[{key}]" if prefix else key

    for key in required:
        if key not in params:
            raise missing_param(name(key))
    clean: dict[str, Any] = {}
    for key, value in params.items():
        if not prefix and key in IGNORED:
            continue
        check = schema.get(key)
        if check is None:
            raise unknown_param(name(key))
        clean[key] = check(value, name(key))
    return clean

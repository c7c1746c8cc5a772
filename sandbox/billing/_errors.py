"""Stripe's error answers: `{"error": {"type", "message", "code", "param"}}` plus a status."""

from __future__ import annotations

from typing import Any

DOC_URL = "https://stripe.com/docs/error-codes"


class StripeError(Exception):
    """An error answer. `saved` says whether an Idempotency-Key remembers it (Stripe does not
    remember requests that failed validation before any work was done)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        saved: bool = True,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}
        self.saved = saved
        self.extra = extra or {}  # card errors name the charge, decline code, intent...

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.code:
            error["code"] = self.code
            error["doc_url"] = f"{DOC_URL}#{self.code.replace('_', '-')}"
        if self.param:
            error["param"] = self.param
        error.update(self.extra)
        return {"error": error}


def no_such(object_name: str, object_id: str, param: str = "id", status: int = 404) -> StripeError:
    return StripeError(
        status,
        f"No such {object_name}: '{object_id}'",
        code="resource_missing",
        param=param,
    )


def param_error(message: str, *, param: str, code: str = "parameter_invalid") -> StripeError:
    return StripeError(400, message, code=code, param=param, saved=False)


def unknown_param(param: str) -> StripeError:
    return param_error(
        f"Received unknown parameter: {param}", param=param, code="parameter_unknown"
    )


def missing_param(param: str) -> StripeError:
    return param_error(f"Missing required param: {param}.", param=param, code="parameter_missing")

"""The API against its own OpenAPI document, fuzzed by schemathesis: every operation gets
requests generated from the document (valid ones and invalid ones), sent with a real key of
the app's keyring that the operation admits. Each answer must be one the document declares
(status, headers, body schema), and none is a server error except the documented 503 with
Retry-After: the workflow engine (in one pass) or a counterpart out of reach (billing,
support and the ERP listen nowhere here).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.fuzz.harness import API_KEYS, Harness, Mode, fuzz_settings, serve_harness
from tests.fuzz.test_hostile_input import PAYLOAD_KEY, ROLES_BY_OPERATION

# Small and derandomized: both passes over every operation run in well under a minute.
CONFORMANCE = settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    configured = fuzz_settings(tmp_path_factory.mktemp("conformance"), payload_keys=[PAYLOAD_KEY])
    with serve_harness(configured) as harness:
        yield harness


@pytest.fixture(scope="module")
def api_schema(served: Harness) -> Any:
    """The document as the app serves it, and the app to send the cases to: its lifespan
    is the harness's (a second one would close the clients the first one opened)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            for phase in ("startup", "shutdown"):
                await receive()
                await send({"type": f"lifespan.{phase}.complete"})
            return
        await served.app(scope, receive, send)

    return schemathesis.openapi.from_asgi("/openapi.json", app)


# Every operation of the document; the next test proves none is missed.
OPERATIONS = sorted(
    {*ROLES_BY_OPERATION, ("POST", "/webhooks/stripe"), ("POST", "/webhooks/zendesk")}
)
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
# What a schema cannot say, so a request it admits may still be refused with a 422 naming the
# rule: a last day before the first (reconciliations); the webhooks, whose valid signature no
# schema can state, are left out the same way.
CROSS_FIELD_RULES = {("POST", "/v1/reconciliations")}


def test_every_operation_of_the_document_is_fuzzed(api_schema: Any) -> None:
    documented = {
        (result.ok().method.upper(), result.ok().path) for result in api_schema.get_all_operations()
    }
    assert documented == set(OPERATIONS)


def headers_for(operation: APIOperation) -> dict[str, str]:
    """A key of a role the operation admits (none for the open ones: health, webhooks); a
    credit request also names itself, as the body's request_id or this header must."""
    key = (operation.method.upper(), operation.path)
    roles = ROLES_BY_OPERATION.get(key)
    if not roles:
        return {}
    role = "finance_admin" if "finance_admin" in roles else sorted(roles)[0]
    headers = {"Authorization": f"Bearer {API_KEYS[role]}"}
    if key == ("POST", "/v1/credits"):
        headers["Idempotency-Key"] = f"conformance-{uuid.uuid4().hex}"
    return headers


def no_server_error_but_a_retryable_503(_ctx: Any, response: Any, case: Case) -> None:
    status = response.status_code
    if status >= 500 and not (status == 503 and response.headers.get("retry-after")):
        raise AssertionError(f"{case.operation.label} answered {status}: {response.text[:300]}")


def fuzz(served: Harness, api_schema: Any, key: tuple[str, str], mode: Mode, data: Any) -> None:
    method, path = key
    operation = api_schema[path][method]
    generation = data.draw(st.sampled_from(MODES), label="generation")
    case = data.draw(operation.as_strategy(generation), label="case")
    served.temporal.reset(mode)
    excluded = [not_a_server_error]
    if path.startswith("/webhooks/") or key in CROSS_FIELD_RULES:
        excluded.append(positive_data_acceptance)
    case.call_and_validate(
        headers=headers_for(operation),
        excluded_checks=excluded,
        additional_checks=[no_server_error_but_a_retryable_503],
    )
    assert not served.temporal.unmodelled, served.temporal.unmodelled


@pytest.mark.parametrize("mode", ["accepting", "down"], ids=["temporal up", "temporal down"])
@pytest.mark.parametrize("key", OPERATIONS, ids=lambda key: f"{key[0]} {key[1]}")
@CONFORMANCE
@given(data=st.data())
def test_answers_conform_to_the_document(
    served: Harness, api_schema: Any, key: tuple[str, str], mode: Mode, data: st.DataObject
) -> None:
    fuzz(served, api_schema, key, mode, data)

"""The checked-in JSON Schemas are the contract: a shape change needs a version bump."""

import json
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from canonical.schema_registry import (
    VERSIONED_MODELS,
    current_schema,
    incompatibilities,
    render,
    schema_path,
)


@pytest.mark.parametrize("model", VERSIONED_MODELS, ids=lambda m: m.__name__)
def test_checked_in_schema_matches_the_model(model: type[BaseModel]) -> None:
    path = schema_path(model)
    assert path.exists(), (
        f"{path.name} is missing: a new model or version bump needs "
        "`python -m canonical.schema_registry`"
    )
    committed = json.loads(path.read_text())
    problems = incompatibilities(committed, current_schema(model))
    assert not problems, (
        f"{model.__name__} changed incompatibly without a SCHEMA_VERSION bump: {problems}"
    )
    assert render(current_schema(model)) == path.read_text(), (
        f"{model.__name__} changed compatibly; re-export with `python -m canonical.schema_registry`"
    )


class _V1(BaseModel):
    SCHEMA_VERSION: ClassVar[int] = 1
    id: str
    note: str | None = None


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema()


def test_adding_an_optional_field_is_compatible() -> None:
    class Added(_V1):
        extra: int | None = None

    assert incompatibilities(_schema(_V1), _schema(Added)) == []


def test_removing_retyping_or_requiring_a_field_is_incompatible() -> None:
    class Removed(BaseModel):
        id: str

    class Retyped(BaseModel):
        id: int
        note: str | None = None

    class Required(BaseModel):
        id: str
        note: str

    assert incompatibilities(_schema(_V1), _schema(Removed)) == ["note: removed"]
    assert incompatibilities(_schema(_V1), _schema(Retyped)) == ["id: type changed"]
    assert "note: now required" in incompatibilities(_schema(_V1), _schema(Required))

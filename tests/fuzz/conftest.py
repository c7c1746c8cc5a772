"""The app under hostile input, once per module (see harness.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fuzz.harness import Harness, fuzz_settings, serve_harness


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """Temporal recorded, billing, support and the ERP unreachable, SQLite in a temp dir."""
    with serve_harness(fuzz_settings(tmp_path_factory.mktemp("fuzz"))) as served:
        yield served

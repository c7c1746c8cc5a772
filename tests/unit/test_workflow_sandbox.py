"""The worker's sandbox: every run still executes its workflow module afresh, from bytecode
read once (workers/sandbox.py)."""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.common.v1 import Payloads
from temporalio.api.failure.v1 import Failure
from temporalio.worker import WorkflowInstanceDetails
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox._runner import _fake_info
from temporalio.workflow import _Definition

from adapters.temporal import data_converter
from workers.sandbox import SharedBytecodeFinder, SharedBytecodeLoader, workflow_runner
from workflows.case_to_credit import CaseToCreditWorkflow


@pytest.fixture
def package(tmp_path: Path) -> Iterator[Path]:
    """A package `lbsandboxprobe` on the path, found through a SharedBytecodeFinder."""
    root = tmp_path / "lbsandboxprobe"
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "steps.py").write_text("STATE: list[int] = []\n\ndef step() -> int:\n    return 1\n")
    finder = SharedBytecodeFinder({"lbsandboxprobe"})
    sys.path.insert(0, str(tmp_path))
    sys.meta_path.insert(0, finder)
    try:
        yield root
    finally:
        sys.meta_path.remove(finder)
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n.partition(".")[0] == "lbsandboxprobe"]:
            del sys.modules[name]


def fresh_import(name: str) -> Any:
    """Import `name` as the sandbox does for each run: a new module, executed again."""
    sys.modules.pop(name, None)
    return importlib.import_module(name)


def test_each_import_is_a_new_module_with_its_own_state_on_shared_code(package: Path) -> None:
    first, second = fresh_import("lbsandboxprobe.steps"), fresh_import("lbsandboxprobe.steps")
    assert first is not second
    assert isinstance(first.__loader__, SharedBytecodeLoader)
    first.STATE.append(1)
    assert second.STATE == []  # module state is never shared
    assert first.step is not second.step
    assert first.step.__code__ is second.step.__code__  # the bytecode is


def test_a_changed_source_file_is_read_again(package: Path) -> None:
    before = fresh_import("lbsandboxprobe.steps")
    time.sleep(0.01)  # a new modification time even on coarse clocks
    (package / "steps.py").write_text("STATE: list[int] = []\n\ndef step() -> int:\n    return 2\n")
    after = fresh_import("lbsandboxprobe.steps")
    assert after.step() == 2
    assert after.step.__code__ is not before.step.__code__


def sandboxed_workflow_class(runner: SandboxedWorkflowRunner) -> type:
    """The workflow class one sandboxed run of CaseToCredit executes (as the worker's
    validation run creates it)."""
    converter = data_converter()
    instance = runner.create_instance(
        WorkflowInstanceDetails(
            payload_converter_factory=converter._new_payload_converter,
            failure_converter_class=converter.failure_converter_class,
            interceptor_classes=[],
            defn=_Definition.must_from_class(CaseToCreditWorkflow),
            info=_fake_info,
            randomness_seed=-1,
            extern_functions={},
            disable_eager_activity_execution=False,
            worker_level_failure_exception_types=[],
            patch_activation_callback=None,
            last_completion_result=Payloads(),
            last_failure=Failure(),
        )
    )
    return instance.globals_and_locals["__temporal_workflow_class"]  # type: ignore[attr-defined,no-any-return]


async def test_sandboxed_runs_get_their_own_workflow_module_on_shared_bytecode() -> None:
    runner = workflow_runner()
    first, second = sandboxed_workflow_class(runner), sandboxed_workflow_class(runner)
    assert first is not second and first is not CaseToCreditWorkflow
    assert first.run.__globals__ is not second.run.__globals__  # each its own module
    assert first.run.__code__ is second.run.__code__

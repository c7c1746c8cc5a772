"""The workflow sandbox as the worker runs it: Temporal's default restrictions, with each
workflow module's bytecode read from disk once per process instead of once per run.

The sandbox re-executes a workflow's module for every run it holds (module state is never
shared between runs), and Python's importer reads and unmarshals that module's `.pyc` each
time: about 35 KB of code objects per cached CaseToCredit run, identical in every copy. Code
objects are immutable, so the runs can share them; each run still executes the module
afresh in its own sandbox, so its globals, functions and classes stay its own.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable, Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec, PathFinder, SourceFileLoader
from types import CodeType, ModuleType
from typing import ClassVar

from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

# Whose modules the sandbox re-executes per run: the workflow modules.
SANDBOXED_PACKAGES = frozenset({"workflows"})


class SharedBytecodeLoader(SourceFileLoader):
    """A source file's loader whose code object is compiled or unmarshalled once per source
    version (path, modification time, size) and then handed to every import of it."""

    _codes: ClassVar[dict[tuple[str, float, int], CodeType]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def get_code(self, fullname: str) -> CodeType:
        stats = self.path_stats(self.path)
        key = (self.path, stats["mtime"], stats.get("size", -1))
        code = self._codes.get(key)
        if code is None:
            with self._lock:
                code = self._codes.get(key) or super().get_code(fullname)
                if code is None:
                    raise ImportError(f"no code for {fullname}", name=fullname)
                self._codes[key] = code
        return code


class SharedBytecodeFinder(MetaPathFinder):
    """Finds the modules of `packages` as Python would, loaded by a `SharedBytecodeLoader`."""

    def __init__(self, packages: Iterable[str]) -> None:
        self.packages = frozenset(packages)

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        if fullname.partition(".")[0] not in self.packages:
            return None
        spec = PathFinder.find_spec(fullname, path, target)
        if spec is not None and type(spec.loader) is SourceFileLoader:
            spec.loader = SharedBytecodeLoader(spec.loader.name, spec.loader.path)
        return spec


def share_workflow_bytecode(packages: Iterable[str] = SANDBOXED_PACKAGES) -> None:
    """Put a `SharedBytecodeFinder` for `packages` first on the import path (once)."""
    packages = frozenset(packages)
    if not any(
        isinstance(finder, SharedBytecodeFinder) and finder.packages == packages
        for finder in sys.meta_path
    ):
        sys.meta_path.insert(0, SharedBytecodeFinder(packages))


def workflow_runner() -> SandboxedWorkflowRunner:
    """The sandboxed runner every workflow worker uses, the replayer too: the SDK's default
    restrictions unchanged, the workflow modules' bytecode shared between runs."""
    share_workflow_bytecode()
    return SandboxedWorkflowRunner()

#!/usr/bin/env python3
"""Developer entry point that needs nothing but Python 3.11+.

    python3 tasks.py demo     create .venv, start the local stack, play the demo
    python3 tasks.py test     create .venv, run the whole test suite
    python3 tasks.py up       create .venv, start the local stack
    python3 tasks.py lint     ruff and mypy
    python3 tasks.py bench    create .venv, run every benchmark (--quick, --only NAME ...)
    python3 tasks.py setup    only create/refresh .venv

The environment is rebuilt only when pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".ledgerbridge-installed"


def setup() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - tasks.py runs on whatever python3 is
        sys.exit(f"ledgerbridge needs Python 3.11 or newer, this is {sys.version.split()[0]}")
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    if not (BIN / "python").exists():
        print("creating .venv", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    pip = [str(BIN / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    print("installing ledgerbridge and its dependencies into .venv", flush=True)
    subprocess.run([*pip, "install", "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "install", "-e", f"{ROOT}[test]"], check=True)
    STAMP.write_text(wanted)


def run(*command: str) -> int:
    return subprocess.call(list(command), cwd=ROOT)


def main(argv: list[str]) -> int:
    task, rest = (argv[0], argv[1:]) if argv else ("help", [])
    if task not in {"setup", "demo", "up", "test", "lint", "bench"}:
        print(__doc__)
        return 0 if task == "help" else 2
    setup()
    if task == "demo":
        return run(str(BIN / "ledgerbridge"), "demo", *rest)
    if task == "up":
        return run(str(BIN / "ledgerbridge"), "up", *rest)
    if task == "test":
        return run(str(BIN / "pytest"), *rest)
    if task == "bench":
        return run(str(BIN / "python"), "-m", "bench", *rest)
    if task == "lint":
        return (
            run(str(BIN / "ruff"), "check", ".")
            or run(str(BIN / "ruff"), "format", "--check", ".")
            or run(str(BIN / "mypy"), ".")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

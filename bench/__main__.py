"""Every benchmark in turn, then one table of everything in bench/results.json.

    .venv/bin/python -m bench [--only NAME ...] [--quick]
    ledgerbridge bench [--only NAME ...] [--quick]
    python3 tasks.py bench [--only NAME ...] [--quick]

Each benchmark runs as its own process (`python -m bench.<name>`, default arguments; a
variant, `python -m bench.<module>` with its fixed arguments, e.g. erp_posting_netsuite is
erp_posting --erp netsuite; with `--quick` the smaller sizes below, passed only when the
module's --help lists the flag), its output shown as it comes. A module that does not exist
yet is named and skipped. Figures that miss their target are reported, not failures: the
exit code is 0 unless a benchmark crashed or ran out of time (then 1).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

from bench._common import PROJECT_ROOT, RESULTS

MODULES = (
    "erp_posting", "erp_posting_netsuite", "orchestration", "scale_out", "ingress",
    "reconciliation", "footprint", "console_inbox", "events_relay",
)  # fmt: skip
# Benchmarks that are another module run with fixed arguments: name -> (module, arguments).
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "erp_posting_netsuite": ("erp_posting", ["--erp", "netsuite"]),
}
# Smaller sizes for --quick, by module: each pair is passed when the module accepts the flag.
QUICK: dict[str, list[tuple[str, str]]] = {
    "erp_posting": [("--documents", "10")],
    "erp_posting_netsuite": [("--documents", "10")],
    "orchestration": [("--events", "100"), ("--diagnose", "never")],
    "scale_out": [("--events", "100"), ("--limits", "unthrottled")],
    "ingress": [("--events", "500"), ("--breakdown", "never")],
    "reconciliation": [("--documents", "10000")],
    "footprint": [("--workflows", "200")],
    "console_inbox": [("--items", "200"), ("--requests", "20")],
    "events_relay": [("--events", "1000")],
}
MODULE_TIMEOUT = 15 * 60  # seconds; a module still running then is stopped


def load_results() -> list[dict[str, Any]]:
    if not RESULTS.exists():
        return []
    return list(json.loads(RESULTS.read_text()))


def quick_args(name: str, module: str) -> tuple[list[str], list[str]]:
    """The quick flags of benchmark `name` that its module's --help lists, and the ones it
    does not (dropped)."""
    help_text = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", "--help"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    passed: list[str] = []
    dropped: list[str] = []
    for flag, value in QUICK.get(name, []):
        if f"{flag} " in help_text or f"{flag}\n" in help_text or f"{flag}]" in help_text:
            passed += [flag, value]
        else:
            dropped.append(flag)
    return passed, dropped


def run_module(name: str, args: list[str]) -> tuple[str, float]:
    """Run one benchmark with its output shown; its outcome and its seconds."""
    began = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", f"bench.{name}", *args],
        cwd=PROJECT_ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
    )  # fmt: skip
    try:
        code = process.wait(timeout=MODULE_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)  # its own clean-up stops what it started
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        return f"stopped after {MODULE_TIMEOUT // 60} min", time.monotonic() - began
    except KeyboardInterrupt:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=120)
        raise
    return ("ok" if code == 0 else f"failed (exit {code})"), time.monotonic() - began


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


STANDARD = ("name", "ours", "baseline", "ratio", "target", "met")


def combined_table(figures: list[dict[str, Any]], fresh: set[str]) -> str:
    """One table of every figure; `*` marks those this run wrote (changed or new); the last
    column holds what else a figure recorded (its size, its store)."""
    width = max([30, *(len(f["name"]) + 2 for f in figures)])
    lines = [f"{'figure':<{width}} {'ours':>10} {'baseline':>10} {'ratio':>8}  "
             f"{'target':<14} {'met':<4} run"]  # fmt: skip
    for f in figures:
        mark = "* " if f["name"] in fresh else "  "
        met = "-" if f.get("met") is None else "yes" if f["met"] else "NO"
        extra = " ".join(f"{k}={v}" for k, v in f.items() if k not in STANDARD)
        lines.append(f"{mark + f['name']:<{width}} {_cell(f.get('ours')):>10} "
                     f"{_cell(f.get('baseline')):>10} {_cell(f.get('ratio')):>8}  "
                     f"{_cell(f.get('target')):<14} {met:<4} {extra}")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", action="extend", choices=MODULES, metavar="NAME",
                        help=f"run only these ({', '.join(MODULES)})")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="smaller sizes: a smoke run")
    args = parser.parse_args(argv)
    selected = [m for m in MODULES if not args.only or m in args.only]

    outcomes: list[tuple[str, str, float, str]] = []  # module, outcome, seconds, arguments
    fresh: set[str] = set()
    began = time.monotonic()
    for name in selected:
        module, fixed = VARIANTS.get(name, (name, []))
        if importlib.util.find_spec(f"bench.{module}") is None:
            print(f"== bench.{module}: not there yet (bench/{module}.py), skipped\n", flush=True)
            outcomes.append((name, "not there yet", 0.0, ""))
            continue
        module_args, dropped = quick_args(name, module) if args.quick else ([], [])
        module_args = fixed + module_args
        shown = " ".join(module_args) or "(default arguments)"
        print(f"== bench.{module} {shown}", flush=True)
        if dropped:
            print(f"   (it takes no {', '.join(dropped)}: not passed)", flush=True)
        before = {f["name"]: f for f in load_results()}
        outcome, seconds = run_module(module, module_args)
        after = load_results()
        fresh |= {f["name"] for f in after if before.get(f["name"]) != f}
        label = " ".join([module, *fixed])
        print(f"== bench.{label}: {outcome} in {seconds:.0f} s\n", flush=True)
        outcomes.append((name, outcome, seconds, shown))
    total = time.monotonic() - began

    print("Benchmarks")
    for name, outcome, seconds, shown in outcomes:
        print(f"  {name:<20} {outcome:<24} {seconds:>6.0f} s  {shown}")
    print(f"  {'total':<20} {'':<24} {total:>6.0f} s ({total / 60:.1f} min)\n")
    figures = load_results()
    if figures:
        print(f"bench/results.json ({len(fresh)} of {len(figures)} figures written by this run, "
              f"marked *; the others are from earlier runs or unchanged)")  # fmt: skip
        print(combined_table(figures, fresh))
        missed = [f["name"] for f in figures if f.get("met") is False]
        if missed:
            print(f"\nmissing their target (reported, not a failure): {', '.join(missed)}")
    crashed = [name for name, outcome, _, _ in outcomes
               if outcome not in ("ok", "not there yet")]  # fmt: skip
    if crashed:
        print(f"\nbenchmarks that did not finish: {', '.join(crashed)}")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())

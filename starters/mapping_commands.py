"""`ledgerbridge mapping check`: finance's mapping held against what billing can bill and
what the ERP has, before a document finds a gap at posting time.

It reads both systems directly through their adapters (their catalogues, nothing else), so
it runs without the worker or the API. Exit codes: 0 clean, 1 something is unmapped or
missing in the ERP (warnings alone do not count), 2 the check could not run (the file is
missing or invalid, a system did not answer).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adapters.errors import AdapterError
from adapters.mapping_file import MappingFileError, load_mapping
from adapters.ports import BillingSystem, Ledger
from adapters.settings import Settings
from canonical.mapping import CatalogEntry
from canonical.mapping_check import MappingFinding, MappingReport, check_mapping
from starters.console import echo, fail, table

CANNOT_CHECK = 2

# Builds the two adapters the check reads (the bootstrap's, or a test's).
Systems = Callable[[Settings], tuple[BillingSystem, Ledger]]


def add_parsers(sub: Any) -> None:
    mapping = sub.add_parser("mapping", help="finance's mapping of billing to the ERP")
    actions = mapping.add_subparsers(dest="action", required=True)
    check = actions.add_parser(
        "check", help="list what billing bills that the mapping lacks, and what it names that "
        "the ERP lacks (exit 1 when anything does)",
    )  # fmt: skip
    check.add_argument(
        "--file", type=Path, help="the mapping file (default: LEDGERBRIDGE_FINANCE_MAPPING, "
        "else finance-mapping.toml under LEDGERBRIDGE_HOME)",
    )  # fmt: skip
    check.add_argument("--json", action="store_true", help="the report as JSON")
    check.add_argument(
        "--erp", help="the ERP of the routing to check against, by its name there (default: "
        "the one on the `erp` queue); each ERP reads finance's mapping",
    )  # fmt: skip


def _bootstrap_systems(settings: Settings, erp: str | None = None) -> tuple[BillingSystem, Ledger]:
    from adapters.bootstrap import LEDGER_BUILDERS, build_billing, build_ledger
    from adapters.routing_file import load_routing

    if erp is None:
        return build_billing(settings), build_ledger(settings)
    routing = load_routing(settings.resolved_erp_routing())
    if erp not in routing.erps:
        raise MappingFileError(f"the ERP routing has no ERP {erp!r} ({', '.join(routing.erps)})")
    return build_billing(settings), LEDGER_BUILDERS[routing.erps[erp].kind](settings)


def cmd_mapping(
    args: argparse.Namespace, settings: Settings, systems: Systems = _bootstrap_systems
) -> int:
    path: Path = args.file or settings.resolved_finance_mapping()
    try:
        mapping = load_mapping(path)
    except MappingFileError as err:
        return fail(str(err), CANNOT_CHECK)
    try:
        erp = getattr(args, "erp", None)
        chosen = systems if erp is None else lambda s: _bootstrap_systems(s, erp)
        billing_catalog, erp_catalog = asyncio.run(_read_catalogs(settings, chosen))
    except MappingFileError as err:
        return fail(str(err), CANNOT_CHECK)
    except AdapterError as err:
        return fail(f"{err.system} did not give its catalogue ({err.operation}): {err.message}",
                    CANNOT_CHECK)  # fmt: skip
    report = check_mapping(mapping, billing_catalog, erp_catalog)
    if args.json:
        echo(json.dumps({"file": str(path), "clean": report.clean,
                         **report.model_dump(mode="json")}, indent=2))  # fmt: skip
    else:
        _print_report(path, report)
    return 0 if report.clean else 1


async def _read_catalogs(
    settings: Settings, systems: Systems
) -> tuple[list[CatalogEntry], list[CatalogEntry]]:
    billing, ledger = systems(settings)
    try:
        return await billing.catalog(), await ledger.catalog()
    finally:
        await billing.aclose()
        await ledger.aclose()


def _print_report(path: Path, report: MappingReport) -> None:
    echo(f"finance mapping {path} (version {report.version})")
    sections = (
        ("billing bills these; the mapping has no entry", report.unmapped),
        ("the mapping names these; the ERP has none", report.missing_in_erp),
        ("warning: mapping entries for ids billing does not know", report.unknown_in_billing),
    )
    for title, findings in sections:
        if findings:
            echo(f"\n{title} ({len(findings)}):")
            echo(_findings_table(findings))
    if report.clean:
        warnings = len(report.unknown_in_billing)
        echo("\nclean: everything billing bills is mapped to what the ERP has"
             + (f" ({warnings} warning(s))" if warnings else ""))  # fmt: skip
    else:
        echo(f"\n{len(report.unmapped)} unmapped, {len(report.missing_in_erp)} missing in the "
             "ERP: documents naming them go to a finance exception")  # fmt: skip


def _findings_table(findings: list[MappingFinding]) -> str:
    return table(("kind", "id", "what"), [(f.kind, f.key, f.detail) for f in findings])


__all__ = ["add_parsers", "cmd_mapping"]

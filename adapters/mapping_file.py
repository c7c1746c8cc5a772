"""Finance's mapping file (TOML), read when it changes.

The file is finance's: versioned in their repository (its `version` bumped with each
change) and named by LEDGERBRIDGE_FINANCE_MAPPING. A worker re-reads it when its
modification time or size changes, so fixing a gap and retrying the finance exception is
enough; nobody restarts anything. tomllib (the standard library) reads it; pydantic
refuses any key it does not know, so a typo is an error, never an ignored entry.
"""

from __future__ import annotations

import json
import os
import threading
import tomllib
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from canonical.mapping import FinanceMapping

M = TypeVar("M", bound=BaseModel)


class MappingFileError(ValueError):
    """The mapping file is missing or says something that is not a mapping."""


def load_mapping(path: Path) -> FinanceMapping:
    mapping = read_toml_model(path, FinanceMapping, "finance mapping")
    currencies = [c.upper() for c in mapping.currencies]
    return mapping.model_copy(update={"currencies": currencies})


def read_toml_model(path: Path, model: type[M], what: str) -> M:
    """The TOML file at `path` as a `model`; MappingFileError naming every problem at once."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MappingFileError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise MappingFileError(f"{what} {path} is unreadable: {err}") from None
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in err.errors()
        )
        raise MappingFileError(f"{what} {path} is invalid: {problems}") from None


class MappingFile:
    """The mapping in `path` as it is now; reloaded only when the file changed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._mapping: FinanceMapping | None = None

    def current(self) -> FinanceMapping:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            raise MappingFileError(f"finance mapping {self.path} does not exist") from None
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if self._mapping is None or stamp != self._stamp:
                self._mapping = load_mapping(self.path)
                self._stamp = stamp
            return self._mapping


def render_mapping(mapping: FinanceMapping) -> str:
    """TOML text of a mapping (the local stack writes its own file with it). Written by
    hand: the standard library reads TOML but does not write it, and these few flat
    tables need no dependency."""
    out = [f"version = {mapping.version}",
           "currencies = [" + ", ".join(_q(c) for c in mapping.currencies) + "]"]  # fmt: skip
    for key, product in mapping.products.items():
        out += ["", f'[products.{_q(key)}]', f'erp_product = {_q(product.erp_product)}',
                f'revenue_account = {_q(product.revenue_account)}']  # fmt: skip
    for key, tax in mapping.tax_rates.items():
        out += ["", f"[tax_rates.{_q(key)}]", f"erp_tax = {_q(tax.erp_tax)}"]
    for key, journal in mapping.payments.items():
        out += ["", f'[payments.{_q(key)}]', f'journal = {_q(journal.journal)}',
                f'clearing_account = {_q(journal.clearing_account)}']  # fmt: skip
    if mapping.refunds is not None:
        out += ["", "[refunds]", f'erp_product = {_q(mapping.refunds.erp_product)}',
                f'revenue_account = {_q(mapping.refunds.revenue_account)}']  # fmt: skip
    if mapping.support_credits is not None:
        out += ["", "[support_credits]", f"erp_product = {_q(mapping.support_credits.erp_product)}",
                f"revenue_account = {_q(mapping.support_credits.revenue_account)}"]  # fmt: skip
    return "\n".join(out) + "\n"


def _q(text: str) -> str:
    """A TOML basic string: JSON's string escapes are TOML's."""
    return json.dumps(text, ensure_ascii=False)

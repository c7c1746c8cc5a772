"""The ERP routing file (TOML): the ERPs ledgerbridge posts to and the legal entities each
books (canonical/erp_routing.py). Named by LEDGERBRIDGE_ERP_ROUTING; read once when a worker
or the API starts, since a new ERP needs workers polling its queue anyway. Where entities
stand in a move (legacy, shadow, cutover) is not in the file but in the store, changed at run
time by `ledgerbridge erp mode`.

    version = 1
    [erps.tryton]
    kind = "tryton"
    queue = "erp"
    [erps.netsuite]
    kind = "netsuite"
    queue = "erp-netsuite"
    [[entities]]
    name = "EU"
    legacy = "tryton"
    target = "netsuite"
    match = { countries = ["DE", "FR"], currencies = ["EUR"] }
    [[entities]]
    name = "US"
    legacy = "tryton"
    match = { default = true }
"""

from __future__ import annotations

from pathlib import Path

from adapters.mapping_file import read_toml_model
from canonical.erp_routing import ErpRouting, single_erp_routing


def load_routing(path: Path | None) -> ErpRouting:
    """The routing in `path`; one ERP for every customer when no file is named.
    MappingFileError when the file is missing or says something that is not a routing."""
    if path is None:
        return single_erp_routing()
    return read_toml_model(path, ErpRouting, "ERP routing")

"""The ERP adapters: Tryton 8.2 over JSON-RPC (`TrytonLedger`) and NetSuite over SuiteTalk
REST (`NetSuiteLedger`)."""

from adapters.erp.netsuite import NetSuiteLedger
from adapters.erp.tryton import TrytonLedger, tryton_dumps, tryton_loads

__all__ = ["NetSuiteLedger", "TrytonLedger", "tryton_dumps", "tryton_loads"]

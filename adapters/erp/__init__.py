"""The ERP adapter: Tryton 8.2 over JSON-RPC (`TrytonLedger`)."""

from adapters.erp.tryton import TrytonLedger, tryton_dumps, tryton_loads

__all__ = ["TrytonLedger", "tryton_dumps", "tryton_loads"]

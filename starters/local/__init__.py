"""Local tooling: the local stack (`ledgerbridge up`), the demo, the chaos run and the
bootstrap of the bundled Tryton ERP."""

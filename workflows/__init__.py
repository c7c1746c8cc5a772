"""Deterministic business processes. Import only canonical/ and activity references."""
